"""What we read from the phone: ABI, model/SoC, per-core max frequency (prime cores), cpufreq, thermal."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

from lraqvit_deploy.errors import DeployError

ABI = "arm64-v8a"
# One shell round trip each; `2>/dev/null` because some cores/zones are unreadable on user builds.
MAX_FREQ_CMD = ("for c in /sys/devices/system/cpu/cpu[0-9]*; do "
                "echo \"${c##*cpu} $(cat $c/cpufreq/cpuinfo_max_freq 2>/dev/null)\"; done")
CUR_FREQ_CMD = ("for c in /sys/devices/system/cpu/cpu[0-9]*; do "
                "echo \"${c##*cpu} $(cat $c/cpufreq/scaling_cur_freq 2>/dev/null)\"; done")
THERMAL_CMD = ("for z in /sys/class/thermal/thermal_zone*; do "
               "echo \"$(cat $z/type 2>/dev/null) $(cat $z/temp 2>/dev/null)\"; done")


@dataclass
class DeviceInfo:
    serial: str
    model: str
    soc: str
    android: str
    abis: List[str]
    max_khz: Dict[int, int]

    @property
    def description(self) -> str:
        return f"{self.model} ({self.soc}, Android {self.android}, serial {self.serial})"


def parse_core_table(text: str) -> Dict[int, int]:
    """`CORE VALUE` lines -> {core: value}; cores without a readable value are left out."""
    table = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].lstrip("-").isdigit():
            table[int(parts[0])] = int(parts[1])
    return table


def parse_thermal(text: str) -> Dict[str, float]:
    """`TYPE MILLIDEGREES` lines -> {type: degC} (values above 1000 are millidegrees)."""
    temps: Dict[str, float] = {}
    for line in text.splitlines():
        parts = line.rsplit(None, 1)
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            v = int(parts[1])
            name, i = parts[0], 1
            while name in temps:
                i += 1
                name = f"{parts[0]}#{i}"
            temps[name] = v / 1000.0 if abs(v) >= 1000 else float(v)
    return temps


def prime_cores(max_khz: Dict[int, int], n: int = 1) -> List[int]:
    """The `n` cores with the highest cpuinfo_max_freq (ties broken by the higher core id, as the
    prime core is numbered last on Arm big.LITTLE/DynamIQ SoCs)."""
    if not max_khz:
        raise DeployError("could not read /sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq on the device; "
                          "pass --cpus explicitly (e.g. --cpus 7).")
    if n > len(max_khz):
        raise DeployError(f"asked for {n} threads but the device reports {len(max_khz)} cores.")
    ranked = sorted(max_khz, key=lambda c: (max_khz[c], c), reverse=True)
    return sorted(ranked[:n])


def cpu_mask(cores: List[int]) -> str:
    """Hex affinity mask for toybox `taskset` (cores 7 -> '80')."""
    mask = 0
    for c in cores:
        mask |= 1 << c
    return f"{mask:x}"


def read_device(adb) -> DeviceInfo:
    abis = [a for a in adb.getprop("ro.product.cpu.abilist").split(",") if a] or [adb.getprop("ro.product.cpu.abi")]
    soc = " ".join(v for v in (adb.getprop("ro.soc.manufacturer"), adb.getprop("ro.soc.model")) if v) \
        or adb.getprop("ro.board.platform") or "unknown SoC"
    return DeviceInfo(adb.serial or "", adb.getprop("ro.product.model") or "unknown", soc,
                      adb.getprop("ro.build.version.release") or "?", abis,
                      parse_core_table(adb.shell(MAX_FREQ_CMD).stdout))


def check_abi(info: DeviceInfo) -> None:
    if ABI not in info.abis:
        raise DeployError(f"{info.description} supports {', '.join(info.abis) or 'no reported ABI'}, not {ABI}; "
                          "the runner and XNNPACK program target 64-bit Arm phones.")
