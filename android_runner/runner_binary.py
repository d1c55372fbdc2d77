"""Locate the cross-built `executor_runner` and check that it is an AArch64 ELF before pushing it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from lraqvit_deploy.errors import DeployError

BUILD_SCRIPT = Path(__file__).with_name("build_executor_runner.sh")
EM_AARCH64 = 183


def default_runner_path() -> Path:
    from lraqvit_deploy.paths import cache_dir

    return cache_dir("android", "arm64-v8a") / "executor_runner"


def find_runner(path: Optional[str] = None) -> Path:
    p = Path(path or os.environ.get("LRAQVIT_EXECUTOR_RUNNER") or default_runner_path()).expanduser()
    if not p.is_file():
        why = "is a folder" if p.is_dir() else "no such file"
        raise DeployError(
            f"no executor_runner at {p} ({why}); build it once with the Android NDK from an ExecuTorch v1.5.1 "
            f"checkout (bash {BUILD_SCRIPT} /path/to/executorch /path/to/android-ndk), then pass --runner PATH "
            "(or set LRAQVIT_EXECUTOR_RUNNER).")
    check_elf_aarch64(p)
    return p


def check_elf_aarch64(p: Path) -> None:
    with open(p, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF" or len(head) < 20:
        raise DeployError(f"{p} is not an ELF executable; pass the executor_runner built for Android.")
    if head[4] != 2 or int.from_bytes(head[18:20], "little") != EM_AARCH64:
        raise DeployError(f"{p} is not a 64-bit Arm (AArch64) binary; rebuild it for arm64-v8a with "
                          f"{BUILD_SCRIPT.name}.")
