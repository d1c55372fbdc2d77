"""On-device TensorRT engine build and timing for Jetson (installed as `lraqvit_deploy.jetson`)."""
