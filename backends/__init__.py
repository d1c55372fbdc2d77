"""Lowering to deployment runtimes: `executorch` (Android, XNNPACK) and `tensorrt` (Jetson).

Installed as `lraqvit_deploy.backends`; heavy runtimes are imported inside functions only.
"""
