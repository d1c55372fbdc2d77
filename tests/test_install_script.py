"""scripts/install.sh: the qemu download follows this machine's own apt sources (no mirror host of ours)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install.sh"


def debian_mirror(etc: Path) -> str:
    """Run install.sh's `debian_mirror` function alone against the apt configuration folder `etc`."""
    fn = subprocess.run(["sed", "-n", "/^debian_mirror()/,/^}/p", str(SCRIPT)], capture_output=True, text=True,
                        check=True).stdout
    assert fn.startswith("debian_mirror()")
    r = subprocess.run(["bash", "-c", f"set -euo pipefail\n{fn}\ndebian_mirror"], capture_output=True, text=True,
                       env={"APT_SOURCES_DIR": str(etc), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _etc(tmp_path: Path, files: dict) -> Path:
    (tmp_path / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_no_mirror_host_is_hard_coded():
    text = SCRIPT.read_text()
    assert "deb.debian.org" not in text and "LRAQVIT_DEBIAN_MIRROR:-$(debian_mirror)" in text


def test_deb822_sources(tmp_path):
    etc = _etc(tmp_path, {"sources.list.d/debian.sources": (
        "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
        "URIs: http://mirror.example.org/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: https://mirror.example.org/debian/\nSuites: bookworm\nComponents: main\n")})
    assert debian_mirror(etc) == "https://mirror.example.org/debian"


def test_one_line_sources_with_options_and_comments(tmp_path):
    etc = _etc(tmp_path, {"sources.list": (
        "# deb http://commented.example.org/debian bookworm main\n"
        "deb-src http://src.example.org/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://ftp.example.net/debian bookworm main\n"),
        "sources.list.d/other.list.disabled": "deb http://disabled.example.org/debian bookworm main\n"})
    assert debian_mirror(etc) == "http://ftp.example.net/debian"


def test_no_debian_mirror_prints_nothing(tmp_path):
    etc = _etc(tmp_path, {"sources.list": "deb http://archive.ubuntu.com/ubuntu noble main\n"})
    assert debian_mirror(etc) == ""
    assert debian_mirror(tmp_path / "missing") == ""


def test_this_machine(tmp_path):
    if not Path("/etc/debian_version").is_file() or not Path("/etc/apt").is_dir():
        pytest.skip("not a Debian machine")
    uri = debian_mirror(Path("/etc/apt"))
    assert uri == "" or uri.endswith("/debian")
