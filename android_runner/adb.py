"""A thin driver for the `adb` client binary (Debian package `adb`, or platform-tools).

Why the binary and not `adbutils`: the binary is what users already run by hand, so every
error we surface ("unauthorized", "no devices/emulators found") reads exactly like the adb
they know; it starts its own server when none runs (adbutils needs one already running); and
its text interface is stable across the versions shipped by Debian (29.x) and Google (35.x).
Every call is one subprocess with a timeout.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from lraqvit_deploy.errors import DeployError

INSTALL_HINT = "install it (Debian/Ubuntu: `sudo apt install adb`; or Android platform-tools) or pass --adb PATH"


@dataclass(frozen=True)
class AdbDevice:
    serial: str
    state: str  # "device" | "unauthorized" | "offline" | "recovery" | ...
    props: Dict[str, str]


def parse_devices(text: str) -> List[AdbDevice]:
    """Rows of `adb devices -l`: `SERIAL STATE key:value ...` after the 'List of devices attached' header."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("List of devices") or line.startswith("*"):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        props = dict(p.split(":", 1) for p in parts[2:] if ":" in p)
        out.append(AdbDevice(parts[0], parts[1], props))
    return out


class Adb:
    """`adb [-P port] -s SERIAL ...` for one selected device."""

    def __init__(self, adb_path: Optional[str] = None, serial: Optional[str] = None, port: Optional[int] = None,
                 timeout: float = 60.0):
        self.path = find_adb(adb_path)
        self.port, self.timeout, self.serial = port, timeout, serial

    # -- plumbing -------------------------------------------------------------------------------
    def base_cmd(self, with_serial: bool = True) -> List[str]:
        cmd = [self.path]
        if self.port:
            cmd += ["-P", str(self.port)]
        if with_serial and self.serial:
            cmd += ["-s", self.serial]
        return cmd

    def run(self, args: Sequence[str], with_serial: bool = True, timeout: Optional[float] = None,
            check: bool = True) -> subprocess.CompletedProcess:
        cmd = self.base_cmd(with_serial) + list(args)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout or self.timeout,
                                  errors="replace")
        except subprocess.TimeoutExpired:
            raise DeployError(f"`{shlex.join(cmd)}` timed out after {timeout or self.timeout:.0f} s; "
                              "is the device responsive? (try `adb kill-server` and re-plug)") from None
        if check and proc.returncode != 0:
            raise adb_error(proc.stderr + proc.stdout, self.serial, " ".join(args[:1]))
        return proc

    # -- device selection -----------------------------------------------------------------------
    def devices(self) -> List[AdbDevice]:
        return parse_devices(self.run(["devices", "-l"], with_serial=False).stdout)

    def select(self, serial: Optional[str] = None) -> AdbDevice:
        """The device to use: `serial` if given, else the only attached one; clear errors otherwise."""
        serial = serial or self.serial or os.environ.get("ANDROID_SERIAL")
        devs = self.devices()
        dev = choose_device(devs, serial)
        self.serial = dev.serial
        return dev

    # -- operations -----------------------------------------------------------------------------
    def shell(self, command: str, timeout: Optional[float] = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run `command` with the device's /system/bin/sh; adb >= 1.0.41 returns its exit status."""
        return self.run(["shell", command], timeout=timeout, check=check)

    def getprop(self, name: str) -> str:
        return self.shell(f"getprop {shlex.quote(name)}").stdout.strip()

    def push(self, local: str, remote: str) -> None:
        self.run(["push", str(local), remote], timeout=max(self.timeout, 600))

    def pull(self, remote: str, local: str) -> None:
        self.run(["pull", remote, str(local)])


def find_adb(adb_path: Optional[str] = None) -> str:
    path = adb_path or os.environ.get("ADB") or shutil.which("adb")
    if not path or not (os.path.isfile(path) and os.access(path, os.X_OK)):
        where = f" at {adb_path!r}" if adb_path else " on PATH"
        raise DeployError(f"no adb client found{where}; {INSTALL_HINT}.")
    return path


def choose_device(devs: List[AdbDevice], serial: Optional[str]) -> AdbDevice:
    if serial:
        match = [d for d in devs if d.serial == serial]
        if not match:
            seen = ", ".join(f"{d.serial} ({d.state})" for d in devs) or "none"
            raise DeployError(f"device {serial!r} is not attached (attached: {seen}). Check `adb devices -l`.")
        dev = match[0]
    else:
        if not devs:
            raise DeployError("no Android device attached: connect one with USB debugging enabled "
                              "(Settings > Developer options), then check `adb devices -l`.")
        ready = [d for d in devs if d.state == "device"]
        if len(devs) > 1 and len(ready) != 1:
            raise DeployError("several devices are attached; choose one with --serial "
                              f"({', '.join(d.serial for d in devs)}).")
        dev = ready[0] if ready else devs[0]
    return check_state(dev)


def check_state(dev: AdbDevice) -> AdbDevice:
    if dev.state == "unauthorized":
        raise DeployError(f"device {dev.serial} is unauthorized: unlock it and accept the 'Allow USB debugging' "
                          "dialog (revoke and re-plug if no dialog shows), then retry.")
    if dev.state == "offline":
        raise DeployError(f"device {dev.serial} is offline: re-plug it or run `adb reconnect`.")
    if dev.state != "device":
        raise DeployError(f"device {dev.serial} is in state {dev.state!r}; boot it to Android (state 'device').")
    return dev


def adb_error(text: str, serial: Optional[str], what: str) -> DeployError:
    """Map the adb client's error text to an actionable DeployError."""
    low = text.lower()
    if "no devices/emulators found" in low:
        return DeployError("no Android device attached: connect one with USB debugging enabled, then check "
                           "`adb devices -l`.")
    if "unauthorized" in low:
        return DeployError(f"device {serial or ''} is unauthorized: accept the 'Allow USB debugging' dialog on the "
                           "phone, then retry.")
    if "not found" in low and "device" in low:
        return DeployError(f"device {serial!r} is not attached; check `adb devices -l` and --serial.")
    if "offline" in low:
        return DeployError(f"device {serial or ''} is offline: re-plug it or run `adb reconnect`.")
    if "more than one device" in low:
        return DeployError("several devices are attached; choose one with --serial.")
    return DeployError(f"adb {what} failed: {text.strip()[-800:]}")
