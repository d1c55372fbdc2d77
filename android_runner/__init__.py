"""adb-driven on-device runs of ExecuTorch programs (installed as `lraqvit_deploy.android_runner`)."""
