"""Finding (and building) what the Arm check needs: qemu-aarch64 10, the arm64 sysroot, pte_runner for the host
and for linux-aarch64 (android_runner/native/build.sh, shipped in the package)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

QEMU_MAJOR = 10  # the tested major; trixie's qemu-user 1:10.0.x (install.sh)
# qemu versions that run our programs wrongly: refused with this one-line reason.
QEMU_KNOWN_BAD = {
    (7, 2): "qemu 7.2 (Debian bookworm) emulates SME wrongly: an INT8 program under -cpu max returned "
            "garbage (agreement 0.08); install qemu 10 with `bash scripts/install.sh`",
}
_ROOT = Path(__file__).resolve().parents[3]  # the checkout (backends/executorch/arm/) or site-packages/lraqvit_deploy

# the native runner's sources ship in the package (pyproject package-data): a wheel install builds them too
BUILD_SCRIPT = _ROOT / "android_runner" / "native" / "build.sh"


@dataclass(frozen=True)
class ArmToolchain:
    """What `run_native` needs. Falsy when the Arm part is missing: then `reason` says why.

    `host_runner` (x86-64 pte_runner) may exist without the Arm part and vice versa.
    """

    host_runner: Optional[Path] = None
    aarch64_runner: Optional[Path] = None
    qemu: Optional[Path] = None
    qemu_version: Optional[str] = None
    sysroot: Optional[Path] = None
    lib_dirs: Tuple[Path, ...] = ()
    reason: Optional[str] = None  # None: everything for emulated runs is here

    def __bool__(self) -> bool:
        return self.reason is None

    def describe(self) -> Dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else [str(p) for p in v] if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}


def _cache() -> Path:
    return Path(os.environ.get("LRAQVIT_CACHE") or Path.home() / ".cache" / "lraqvit_deploy")


def native_dir() -> Path:
    """Where pte_runner builds go: $LRAQVIT_NATIVE_DIR, else build/native in a source checkout, else the cache
    (an installed package's folder may not be writable)."""
    if os.environ.get("LRAQVIT_NATIVE_DIR"):
        return Path(os.environ["LRAQVIT_NATIVE_DIR"])
    return _ROOT / "build" / "native" if (_ROOT / "pyproject.toml").is_file() else _cache() / "native"


def qemu_version(qemu: Path) -> Tuple[Optional[Tuple[int, int, int]], str]:
    """((major, minor, patch) or None, first line of --version)."""
    try:
        out = subprocess.run([str(qemu), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{qemu}: {e}"
    line = out.strip().splitlines()[0] if out.strip() else ""
    m = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", line)
    return (tuple(int(g or 0) for g in m.groups()) if m else None), line  # type: ignore[return-value]


def check_qemu(qemu: Path) -> Tuple[Optional[str], Optional[str]]:
    """(version string, refusal reason or None)."""
    ver, line = qemu_version(qemu)
    if ver is None:
        return None, f"cannot tell the version of {qemu} ({line or 'no output'})"
    text = ".".join(map(str, ver))
    if ver[:2] in QEMU_KNOWN_BAD:
        return text, QEMU_KNOWN_BAD[ver[:2]]
    if ver[0] < QEMU_MAJOR:
        return text, f"qemu {text} at {qemu} is older than the tested {QEMU_MAJOR}.x; install qemu {QEMU_MAJOR} " \
                     "with `bash scripts/install.sh` (or set LRAQVIT_QEMU_AARCH64)"
    return text, None


def _find_qemu() -> Optional[Path]:
    env = os.environ.get("LRAQVIT_QEMU_AARCH64")
    if env:
        return Path(env)
    cached = _cache() / "arm" / "qemu" / "qemu-aarch64"
    if cached.is_file():
        return cached
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        if p := shutil.which(name):
            return Path(p)
    return None


def _find_sysroot() -> Optional[Path]:
    cands = [os.environ.get("LRAQVIT_ARM_SYSROOT"), "/usr/aarch64-linux-gnu", str(_cache() / "arm" / "sysroot")]
    for c in cands:
        if c and (Path(c) / "lib" / "ld-linux-aarch64.so.1").exists():
            return Path(c)
    return None


def build_runner(target: str, timeout: float = 600) -> Tuple[Optional[Path], Optional[str]]:
    """Build (or find up to date) pte_runner for `target` ("host" | "aarch64"): (path, reason)."""
    out = native_dir() / target / "pte_runner"
    if not BUILD_SCRIPT.is_file():
        return (out if out.is_file() else None), f"no {BUILD_SCRIPT} (the package was installed without its data)"
    env = {**os.environ, "LRAQVIT_NATIVE_DIR": str(native_dir()), "PYTHON": os.environ.get("PYTHON", sys.executable)}
    try:
        proc = subprocess.run(["bash", str(BUILD_SCRIPT), target], capture_output=True, text=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired:
        return None, f"building the {target} runner took over {timeout:.0f} s"
    if proc.returncode == 0 and out.is_file():
        return out, None
    tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [f"exit status {proc.returncode}"]
    return None, f"{target} pte_runner not built: {tail[0]}"


_TOOLCHAIN: Dict[bool, ArmToolchain] = {}


def find_toolchain(build: bool = True, refresh: bool = False) -> ArmToolchain:
    """Locate (and with `build`, build) the runners, qemu-aarch64 and the arm64 sysroot.

    The result is falsy when emulated runs are impossible; `reason` then names the missing piece
    and its fix. Cached per process (`refresh=True` looks again).
    """
    if build in _TOOLCHAIN and not refresh:
        return _TOOLCHAIN[build]
    reasons: List[str] = []
    if build:
        host, why = build_runner("host")
    else:
        p = native_dir() / "host" / "pte_runner"
        host, why = (p if p.is_file() else None), f"no {p}; run bash {BUILD_SCRIPT} host"
    host_runner = host
    qemu = _find_qemu()
    version = None
    if qemu is None:
        reasons.append("no qemu-aarch64 (bash scripts/install.sh installs Debian trixie's qemu-user 10)")
    else:
        version, bad = check_qemu(qemu)
        if bad:
            reasons.append(bad)
    sysroot = _find_sysroot()
    if sysroot is None:
        reasons.append("no arm64 sysroot (apt install g++-aarch64-linux-gnu provides /usr/aarch64-linux-gnu)")
    arm = None
    if build:
        arm, why = build_runner("aarch64")
        if arm is None:
            reasons.append(why or "aarch64 pte_runner not built")
    else:
        p = native_dir() / "aarch64" / "pte_runner"
        if p.is_file():
            arm = p
        else:
            reasons.append(f"no {p}; run bash {BUILD_SCRIPT} aarch64")
    lib_dirs = tuple(d for d in ((arm.parent / "lib") if arm else None, sysroot / "lib" if sysroot else None) if d)
    tc = ArmToolchain(host_runner, arm, qemu, version, sysroot, lib_dirs, "; ".join(reasons) or None)
    _TOOLCHAIN[build] = tc
    return tc
