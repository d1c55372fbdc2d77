"""adb-driven on-device runs of ExecuTorch programs (installed as `lraqvit_deploy.android_runner`).

`adb.py` (device selection and errors), `device.py` (ABI, prime cores, cpufreq/thermal),
`runner_output.py` (executor_runner log parsing), `protocol.py` (one timed run), `cli.py`
(`deploy bench --target android`), `build_executor_runner.sh` (NDK build of the runner).
"""
