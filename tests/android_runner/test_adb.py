"""android_runner error paths against the real Debian `adb` client with no device attached.

Each test talks to its own adb server on a private port (ANDROID_ADB_SERVER_PORT / -P) and
kills that server afterwards, so no daemon is left behind and a developer's server on 5037 is
never touched.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lraqvit_deploy.android_runner.adb import Adb, find_adb
from lraqvit_deploy.android_runner.runner_binary import check_elf_aarch64, find_runner
from lraqvit_deploy.errors import DeployError

ADB = shutil.which("adb")
needs_adb = pytest.mark.skipif(ADB is None, reason="the adb client is not installed (apt install adb)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def adb_port():
    port = _free_port()
    yield port
    subprocess.run([ADB, "-P", str(port), "kill-server"], capture_output=True, timeout=30)


@needs_adb
def test_no_device_attached(adb_port):
    adb = Adb(port=adb_port)
    assert adb.devices() == []
    with pytest.raises(DeployError, match="no Android device attached"):
        adb.select()


@needs_adb
def test_unknown_serial(adb_port):
    adb = Adb(port=adb_port)
    with pytest.raises(DeployError, match="'R5CT0000' is not attached"):
        adb.select("R5CT0000")
    # the adb client's own error text ("device 'R5CT0000' not found") is mapped as well
    adb.serial = "R5CT0000"
    with pytest.raises(DeployError, match="not attached"):
        adb.shell("getprop ro.product.cpu.abi")


@needs_adb
def test_shell_without_serial_and_no_device(adb_port):
    with pytest.raises(DeployError, match="no Android device attached"):
        Adb(port=adb_port).shell("true")


def test_missing_adb_binary(tmp_path):
    with pytest.raises(DeployError, match="no adb client found at .*apt install adb"):
        find_adb(str(tmp_path / "adb"))


def test_missing_and_wrong_abi_runner(tmp_path):
    with pytest.raises(DeployError, match="build_executor_runner.sh"):
        find_runner(str(tmp_path / "executor_runner"))
    text = tmp_path / "runner.txt"
    text.write_text("#!/bin/sh\n")
    with pytest.raises(DeployError, match="not an ELF"):
        check_elf_aarch64(text)
    host_elf = Path(sys.executable).resolve()  # an x86-64 (or host) ELF, not AArch64
    if os.uname().machine != "aarch64":
        with pytest.raises(DeployError, match="not a 64-bit Arm"):
            check_elf_aarch64(host_elf)


@needs_adb
def test_cli_bench_android_without_device(adb_port, tmp_path):
    """The whole `deploy bench --target android` path exits 1 with the adb message, no traceback."""
    pte = tmp_path / "m.pte"
    pte.write_bytes(b"\0" * 4 + b"ET12" + b"\0" * 56)  # the files named are checked before the device is asked
    runner = tmp_path / "executor_runner"
    runner.write_bytes(b"\x7fELF\x02" + bytes(13) + (183).to_bytes(2, "little"))  # an AArch64 ELF header
    env = {**os.environ, "ANDROID_ADB_SERVER_PORT": str(adb_port)}
    env.pop("ANDROID_SERIAL", None)
    proc = subprocess.run([sys.executable, "-m", "lraqvit_deploy", "bench", "--target", "android", str(pte),
                           "--cooldown", "0", "--runner", str(runner)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "no Android device attached" in proc.stderr and "Traceback" not in proc.stderr


def test_build_script_rejects_non_checkout(tmp_path):
    script = Path(__file__).parents[2] / "android_runner" / "build_executor_runner.sh"
    proc = subprocess.run(["bash", str(script), str(tmp_path), str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "not an ExecuTorch checkout" in proc.stderr
