"""android_runner: output parsing (recorded real executor_runner logs), command construction, device maths."""
from __future__ import annotations

from pathlib import Path

import pytest

from lraqvit_deploy.android_runner.adb import choose_device, parse_devices
from lraqvit_deploy.android_runner.device import cpu_mask, parse_core_table, parse_thermal, prime_cores
from lraqvit_deploy.android_runner.protocol import RunPlan, runner_command, to_result
from lraqvit_deploy.android_runner.runner_output import parse_runner_output
from lraqvit_deploy.errors import DeployError

DATA = Path(__file__).parents[1] / "data"


def test_parse_arm_learning_path_log():
    out = parse_runner_output((DATA / "executor_runner_arm_learning_path.log").read_text())
    assert out.succeeded
    assert out.total_ms == pytest.approx(2.904883) and out.executions == 1
    assert out.threads == 1 and out.method == "forward"
    assert out.iteration_ms == [] and out.load_ms is None  # older runner: neither line exists


def test_parse_v1_4_log_with_iterations_and_load_time():
    out = parse_runner_output((DATA / "executor_runner_v1_4.log").read_text())
    assert out.succeeded
    assert out.load_ms == pytest.approx(4463.268273)
    assert out.iteration_ms == [pytest.approx(241.944288)]
    assert out.total_ms == pytest.approx(241.944288)


def test_parse_failure_line_from_issue_3848():
    out = parse_runner_output("java.lang.Exception: Execution of method forward failed with status 0x12\n")
    assert not out.succeeded and out.error == "Execution of method forward failed with status 0x12"


def _plan(tmp_path, warmup=2, iterations=3):
    pte = tmp_path / "m.pte"
    pte.write_bytes(b"\0" * 1000)
    return RunPlan(pte=pte, runner=tmp_path / "executor_runner", threads=1, warmup=warmup, iterations=iterations)


def test_to_result_drops_warmup_iterations(tmp_path):
    # Lines in the v1.4/v1.5 format (same format strings as the recorded log above).
    times = [50.0, 40.0, 10.0, 12.0, 11.0]
    log = "I 00:00:00.1 executorch:executor_runner.cpp:626] Model loaded in 8.5 ms.\n"
    log += "I 00:00:00.1 executorch:executor_runner.cpp:130] Resetting threadpool with num threads = 1\n"
    log += "".join(f"I 00:00:01.0 executorch:executor_runner.cpp:781] Iteration {i + 1} of 5: {t} ms\n"
                   for i, t in enumerate(times))
    log += "I 00:00:02.0 executorch:executor_runner.cpp:791] Model executed successfully 5 time(s) in 123.0 ms.\n"
    r = to_result(log, 0, _plan(tmp_path), "Pixel", [7], {}, {})
    assert r.iterations == 3 and r.median_ms == 11.0 and r.max_ms == 12.0 and r.min_ms == 10.0
    assert r.load_ms == 8.5 and r.threads == 1 and r.target == "android"
    assert r.extra["timing_source"] == "per-iteration log lines"


def test_to_result_falls_back_to_total_for_old_runner(tmp_path):
    r = to_result((DATA / "executor_runner_arm_learning_path.log").read_text(), 0, _plan(tmp_path, 0, 1),
                  "board", [0], {}, {})
    assert r.median_ms == pytest.approx(2.904883) and "total" in r.extra["timing_source"]


def test_runner_crash_and_failure_are_deploy_errors(tmp_path):
    with pytest.raises(DeployError, match="crashed \\(signal 11\\)"):
        to_result("I ... Using method forward\n", 139, _plan(tmp_path), "d", [7], {}, {})
    with pytest.raises(DeployError, match="failed with status 0x12"):
        to_result("E x] Execution of method forward failed with status 0x12\n", 1, _plan(tmp_path), "d", [7], {}, {})
    with pytest.raises(DeployError, match="executor_runner failed"):
        to_result("", 0, _plan(tmp_path), "d", [7], {}, {})  # exit 0 but no success line


def test_runner_command_pins_and_sets_flags():
    cmd = runner_command("/data/local/tmp/lraqvit", "testbed_xnnpack_q8.pte", 1, 55, "80", "run_1.log")
    assert cmd == ("cd /data/local/tmp/lraqvit && taskset 80 ./executor_runner --model_path=testbed_xnnpack_q8.pte "
                   "--num_executions=55 --cpu_threads=1 > run_1.log 2>&1")
    assert "taskset" not in runner_command("/d", "m.pte", 4, 10, None, "l.log")


def test_prime_core_detection_and_masks():
    # cpuinfo_max_freq of a Snapdragon 8 Gen 2 layout: 3 little, 4 big (2 clusters), 1 prime (Cortex-X3).
    table = parse_core_table("0 2016000\n1 2016000\n2 2016000\n3 2803200\n4 2803200\n5 2803200\n6 2803200\n"
                             "7 3187200\n8 \n")
    assert len(table) == 8
    assert prime_cores(table, 1) == [7] and cpu_mask([7]) == "80"
    assert prime_cores(table, 2) == [6, 7] and cpu_mask([6, 7]) == "c0"
    with pytest.raises(DeployError, match="--cpus"):
        prime_cores({}, 1)


def test_parse_thermal_zones():
    temps = parse_thermal("cpu-1-0-usr 41200\ncpu-1-0-usr 43000\nbattery 31\ngpu 38500\nbroken \n")
    assert temps == {"cpu-1-0-usr": 41.2, "cpu-1-0-usr#2": 43.0, "battery": 31.0, "gpu": 38.5}


def test_device_selection_states():
    # `adb devices -l` rows as the adb client prints them.
    devs = parse_devices("List of devices attached\n"
                         "R5CT12345 unauthorized usb:1-1 transport_id:3\n"
                         "emulator-5554 offline transport_id:4\n"
                         "HT7A1B2C3 device usb:1-2 product:husky model:Pixel_8_Pro device:husky transport_id:5\n")
    assert [d.state for d in devs] == ["unauthorized", "offline", "device"]
    assert devs[2].props["model"] == "Pixel_8_Pro"
    assert choose_device(devs, None).serial == "HT7A1B2C3"  # the only ready one
    with pytest.raises(DeployError, match="unauthorized"):
        choose_device(devs, "R5CT12345")
    with pytest.raises(DeployError, match="offline"):
        choose_device(devs, "emulator-5554")
    with pytest.raises(DeployError, match="not attached"):
        choose_device(devs, "nope")
    with pytest.raises(DeployError, match="no Android device attached"):
        choose_device([], None)


def test_wrong_abi_is_refused():
    from lraqvit_deploy.android_runner.device import DeviceInfo, check_abi

    old = DeviceInfo("0123", "Moto E", "MT6739", "9", ["armeabi-v7a", "armeabi"], {0: 1500000})
    with pytest.raises(DeployError, match="not arm64-v8a"):
        check_abi(old)
    check_abi(DeviceInfo("1", "Pixel 8", "Tensor G3", "15", ["arm64-v8a", "armeabi-v7a"], {8: 2910000}))
