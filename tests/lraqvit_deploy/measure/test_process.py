"""lraqvit_deploy.measure.process: a step's record written by its child, completed by the parent, reused by digest.

(`run_child`'s own measuring, peak memory both ways, exit codes and timeouts: tests/lraqvit_deploy/table/test_child.py.)
"""
from __future__ import annotations

import json
import subprocess
import sys

from lraqvit_deploy.measure.process import ChildRun, record_call, reused_record, run_recorded

CHILD = ("import sys; from lraqvit_deploy.measure.process import record_call; "
         "sys.exit(record_call(lambda: {{'ok': {ok}, 'seconds': 1.5, 'x': b'x' * (40 << 20) and 1}}, sys.argv[1]))")


def test_the_child_records_and_the_parent_completes(tmp_path):
    result, log = tmp_path / "step.result.json", tmp_path / "logs" / "log.txt"
    rec = run_recorded([sys.executable, "-c", CHILD.format(ok=True), str(result)], result, log, "step m", digest="d1")
    assert rec["ok"] is True and rec["x"] == 1 and rec["exit_status"] == 0 and rec["digest"] == "d1"
    assert rec["peak_rss_kib"] >= 40 << 10  # the child's own VmHWM, its 40 MiB allocation in it
    assert isinstance(rec["ru_maxrss_kib"], int) and rec["ru_maxrss_kib"] >= rec["peak_rss_kib"] - 1024
    assert rec["process_seconds"] > 0
    assert json.loads(result.read_text()) == rec  # written back with what the parent measured
    assert log.read_text().startswith("\n===== step m ")
    # a failed step: its record says so, exit status 1
    rec = run_recorded([sys.executable, "-c", CHILD.format(ok=False), str(result)], result, log, "again")
    assert rec["ok"] is False and rec["exit_status"] == 1 and "digest" not in rec
    assert log.read_text().count("=====") == 4


def test_a_child_that_writes_no_record(tmp_path):
    result, log = tmp_path / "r.json", tmp_path / "log.txt"
    result.write_text('{"ok": true}')  # a previous run's record never stands for this one
    rec = run_recorded([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], result, log, "x")
    assert rec["ok"] is False and rec["exit_status"] == 3 and "wrote no result" in rec["error"]
    assert rec["peak_rss_kib"] == rec["ru_maxrss_kib"]  # no VmHWM of its own: ru_maxrss stands in
    assert "boom" in log.read_text()


def test_record_call_records_an_exception(tmp_path, capsys):
    path = tmp_path / "r.json"
    assert record_call(lambda: 1 / 0, path) == 1
    rec = json.loads(path.read_text())
    assert rec["ok"] is False and rec["error"].startswith("ZeroDivisionError") and rec["peak_rss_kib"] > 0
    assert "Traceback" in capsys.readouterr().err
    assert record_call(lambda: {"ok": True}, path) == 0 and json.loads(path.read_text())["ok"] is True


def test_reuse_needs_success_the_same_digest_and_the_output(tmp_path):
    result, out = tmp_path / "r.json", tmp_path / "out" / "manifest.json"
    assert reused_record(result, "d") is None  # no record
    result.write_text("not json")
    assert reused_record(result, "d") is None
    result.write_text(json.dumps({"ok": True, "digest": "d", "seconds": 2.0}))
    assert reused_record(result, "d") == {"ok": True, "digest": "d", "seconds": 2.0, "reused": True}
    assert reused_record(result, "other") is None
    assert reused_record(result, "d", out) is None  # its output is gone
    out.parent.mkdir()
    out.write_text("{}")
    assert reused_record(result, "d", out)["reused"] is True
    result.write_text(json.dumps({"ok": False, "digest": "d"}))
    assert reused_record(result, "d", out) is None


def test_child_run_keeps_exact_figures_and_rounds_its_dict():
    run = ChildRun(0, 1.23456, 123456 / 1024, None)
    assert round(run.ru_maxrss_mb * 1024) == 123456
    assert run.to_dict() == {"returncode": 0, "seconds": 1.235, "ru_maxrss_mb": 120.6, "vmhwm_mb": None}


def test_importing_it_imports_no_torch():
    code = "import sys, lraqvit_deploy.measure.process; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
