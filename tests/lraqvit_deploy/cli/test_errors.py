"""How the CLI reports errors: one line naming the flag, exit 1; internal errors say so (traceback on --debug)."""
import subprocess
import sys

import pytest

from lraqvit_deploy.cli.main import main


def _deploy(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lraqvit_deploy", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("argv, words", [
    (["bench", "--target", "host", "x", "--iterations", "0"], "--iterations 0: must be >= 1"),
    (["bench", "--target", "host", "x", "--warmup", "-1"], "--warmup -1: must be >= 0"),
    (["bench", "--target", "android", "x", "--cooldown", "nan"], "--cooldown nan: expected a finite number"),
    (["bench", "--target", "android", "x", "--cpus", "a,b"], "comma-separated core numbers"),
    (["build", "--target", "jetson", "--out", "o", "--trt-opset", "12"], "--trt-opset 12: must be >= 13"),
    (["build", "--target", "jetson", "--out", "o", "--trt-min-agreement", "inf"], "expected a finite number"),
    (["build", "--target", "android", "--out", "o", "--min-agreement", "1.5"], "--min-agreement 1.5: must be <= 1"),
    (["build", "--target", "android", "--out", "o", "--verify-images", "0"], "--verify-images 0: must be >= 1"),
    (["bench", "--target", "host", "x", "--iterations", "2.5"], "invalid int value"),
    (["compress", "--out", "o"], "nothing to do"),
    (["compress", "--out", "o", "--param-reduction", "0.3"], "needs --method"),
    (["compress", "--out", "o", "--method", "lra"], "needs --param-reduction"),
    (["compress", "--out", "o", "--quant", "wads", "--calib-images", "0"], "--calib-images 0: must be >= 1"),
    (["compress", "--out", "o", "--wads-iters", "5"], "add --quant METHOD"),
    (["eval", "--threads", "0"], "--threads 0"),
])
def test_bad_values_are_one_line_naming_the_flag(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own checks (a non-integer for an integer flag)
        rc = e.code
    assert rc == 1
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_bad_flag_is_exit_1_one_line(tmp_path):
    r = _deploy("bench", "--target", "host", "x", "--iterations", "2.5", cwd=tmp_path)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "invalid int value" in r.stderr


def test_internal_error_is_reported_as_such(tmp_path, monkeypatch, capsys):
    import lraqvit_deploy.cli.eval as ev

    def boom(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(ev, "run", boom)
    from lraqvit_deploy.cli.main import build_parser  # noqa: F401  (run is bound at registration)

    assert main(["eval"]) == 2
    err = capsys.readouterr().err
    assert "internal error, please report" in err and "ZeroDivisionError: a bug" in err and "--debug" in err
    with pytest.raises(ZeroDivisionError):
        main(["eval", "--debug"])
