"""lraqvit_deploy.io: file I/O only, importable without the model code (no artifacts -> models -> io loop)."""
from __future__ import annotations

import subprocess
import sys

from lraqvit_deploy.io import read_json, sha256_file, sha256_json, write_json


def test_io_imports_nothing_of_the_sdk_but_errors():
    code = "import sys, lraqvit_deploy.io; print(sorted(m for m in sys.modules if m.startswith('lraqvit_deploy')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['lraqvit_deploy', 'lraqvit_deploy.errors', 'lraqvit_deploy.io']"


def test_json_round_trip_and_hash(tmp_path):
    write_json(tmp_path / "a.json", {"x": [1, 2], "p": tmp_path})
    assert read_json(tmp_path / "a.json") == {"x": [1, 2], "p": str(tmp_path)}
    assert len(sha256_file(tmp_path / "a.json")) == 64


def test_sha256_json_is_a_content_key():
    assert sha256_json({"a": 1, "b": [2, 3]}) == sha256_json({"b": [2, 3], "a": 1})  # key order does not count
    assert sha256_json({"a": 1}) != sha256_json({"a": 2}) and len(sha256_json({})) == 64
