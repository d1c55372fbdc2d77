"""nvpmodel / clock-pinning checks, on a sysfs tree laid out like a Jetson's."""
import pytest

from lraqvit_deploy.jetson import clocks


def test_parse_nvpmodel_real_output():
    # `nvpmodel -q` as printed on a device (anduril/jetpack-nixos#460)
    assert clocks.parse_nvpmodel("NV Power Mode: MAXN\n0\n") == {"power_mode": "MAXN", "power_mode_id": 0}
    assert clocks.parse_nvpmodel("NVPM WARN: fan mode is not set!\nNV Power Mode: MODE_15W\n2\n") == \
        {"power_mode": "MODE_15W", "power_mode_id": 2}
    assert clocks.parse_nvpmodel("") == {"power_mode": None, "power_mode_id": None}


def _sysfs(root, cpu_min, gpu_min, maxf=2265600, gpu_max=1377000000):
    for i in range(2):
        d = root / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_min_freq").write_text(f"{cpu_min}\n")
        (d / "scaling_cur_freq").write_text(f"{maxf}\n")
        (d / "scaling_max_freq").write_text(f"{maxf}\n")
    g = root / "sys/devices/gpu.0/devfreq/17000000.gv11b"
    g.mkdir(parents=True)
    (g / "min_freq").write_text(f"{gpu_min}\n")
    (g / "cur_freq").write_text(f"{gpu_max}\n")
    (g / "max_freq").write_text(f"{gpu_max}\n")


@pytest.mark.parametrize("cpu_min,gpu_min,pinned", [(2265600, 1377000000, True), (115200, 1377000000, False),
                                                    (2265600, 114750000, False)])
def test_pinned_when_min_equals_max(tmp_path, cpu_min, gpu_min, pinned):
    _sysfs(tmp_path, cpu_min, gpu_min)
    c = clocks.read_clocks(str(tmp_path))
    assert c["pinned"] is pinned and c["gpu"]["devfreq"] == "17000000.gv11b" and len(c["cpus"]) == 2


def test_warns_without_jetson(tmp_path):
    state = clocks.check_power_state(str(tmp_path))  # this host: no nvpmodel, no devfreq
    assert not state["pinned"] and any("jetson_clocks" in w for w in state["warnings"])
