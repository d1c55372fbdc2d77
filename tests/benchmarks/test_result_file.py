"""benchmarks/_result_file.py: the one `--out STEM` convention and the result writer the table scripts share."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import _result_file as rf

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("given, stem", [("results/x", "results/x"), ("results/x.json", "results/x"),
                                         ("results/x.md", "results/x"), ("results/x.v2", "results/x.v2"),
                                         ("x.tar", "x.tar")])
def test_out_names_a_stem(given, stem):
    assert rf.out_stem(given) == Path(stem)


def test_add_out_parses_to_a_stem_with_the_default():
    p = argparse.ArgumentParser()
    rf.add_out(p, Path("benchmarks/results/table1_lra"))
    assert p.parse_args([]).out == Path("benchmarks/results/table1_lra")
    assert p.parse_args(["--out", "/tmp/t.json"]).out == Path("/tmp/t")
    assert "STEM.json and STEM.md" in p.format_help()
    q = argparse.ArgumentParser()
    rf.add_out(q, Path("r/model_coverage.json"), markdown=False)
    assert q.parse_args([]).out == Path("r/model_coverage") and "STEM.md" not in q.format_help()


def test_write_creates_both_files_beside_the_stem(tmp_path):
    stem = tmp_path / "new" / "run.v2"
    path = rf.write(stem, {"rows": [1, 2], "where": tmp_path}, "# report\n")
    assert path == tmp_path / "new" / "run.v2.json"
    assert json.loads(path.read_text()) == {"rows": [1, 2], "where": str(tmp_path)}
    assert (tmp_path / "new" / "run.v2.md").read_text() == "# report\n"
    rf.write(tmp_path / "only.md", {"a": 1})
    assert (tmp_path / "only.json").is_file() and not (tmp_path / "only.md").exists()


def test_header_records_schema_command_and_machine():
    h = rf.header("lraqvit-deploy/x/1", "/any/where/benchmarks/x.py", ["--out", "a b"], cpu={"model_name": "C"})
    assert h["schema"] == "lraqvit-deploy/x/1" and h["command"] == "python benchmarks/x.py --out a b"
    assert h["cpu"] == {"model_name": "C"} and "torch" in h["versions"] and len(h["date"]) == 10
    assert set(rf.header("s", "x.py", [])["cpu"]) >= {"model_name", "family", "flags"}  # lscpu's fields


def test_a_script_rerenders_its_committed_report_through_the_convention(tmp_path):
    # size_budget_check --render-only reads STEM.json and writes STEM.md: run on a copy of the committed result,
    # given as a path ending in .json, it rebuilds the committed Markdown byte for byte
    src = ROOT / "benchmarks" / "results" / "size_budget_check"
    shutil.copy(src.with_suffix(".json"), tmp_path / "sb.json")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "size_budget_check.py"), "--render-only",
                        "--out", str(tmp_path / "sb.json")], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "sb.md").read_text() == src.with_suffix(".md").read_text()
    assert json.loads((tmp_path / "sb.json").read_text()) == json.loads(src.with_suffix(".json").read_text())
