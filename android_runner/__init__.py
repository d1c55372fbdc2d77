"""adb-driven on-device runs of ExecuTorch programs (installed as `lraqvit_deploy.android_runner`).

`adb.py` (device selection and errors), `device.py` (ABI, prime cores, cpufreq/thermal),
`runner_output.py` (executor_runner log parsing), `protocol.py` (one timed run), `bench.py`
(`AndroidBenchOptions` and `bench`, what `deploy bench --target android` calls), `build_executor_runner.sh` (NDK build of the runner).
"""
