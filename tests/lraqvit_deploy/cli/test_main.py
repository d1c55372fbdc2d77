"""The `deploy` command as a user runs it (a real subprocess for exit codes and stderr)."""
import json
import subprocess
import sys

import pytest

from lraqvit_deploy.artifacts import save_model_artifact
from lraqvit_deploy.cli.main import main


def _deploy(*args):
    return subprocess.run([sys.executable, "-m", "lraqvit_deploy", *args], capture_output=True, text=True)


def test_help_lists_commands():
    r = _deploy("--help")
    assert r.returncode == 0 and "eval" in r.stdout
    r = _deploy("eval", "--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "--weights" in r.stdout


@pytest.mark.parametrize("command", ["eval", "compress", "build", "bench", "profile", "table"])
def test_every_command_teaches_with_help(command):
    r = _deploy(command, "--help")
    assert r.returncode == 0, r.stderr
    assert "usage: deploy " + command in r.stdout and "Traceback" not in r.stderr


def test_user_error_exits_1_without_traceback():
    r = _deploy("eval", "--model", "deit_tiny_patch16_224", "--weights", "/nonexistent.safetensors")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "--weights '/nonexistent.safetensors': no such file" in r.stderr


def test_eval_random_timm_model_writes_json(tmp_path):
    out = tmp_path / "e.json"
    rc = main(["eval", "--model", "deit_tiny_patch16_224", "--weights", "random", "--img-size", "32",
               "--num-classes", "10", "--data", "fashion-mnist:test", "--limit", "32", "--quiet", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    for key in ("top1", "params", "gflops", "size_mb"):
        assert key in data
    assert data["n_images"] == 32 and 0 <= data["top1"] <= 100


def test_eval_artifact_with_reference(tmp_path, capsys):
    from conftest import make_tiny

    save_model_artifact(tmp_path / "a", make_tiny("deit"))
    rc = main(["eval", str(tmp_path / "a"), "--data", "fashion-mnist:test", "--limit", "16", "--quiet",
               "--reference", str(tmp_path / "a"), "--json", str(tmp_path / "e.json")])
    assert rc == 0
    assert json.loads((tmp_path / "e.json").read_text())["agreement"] == 1.0


def test_eval_timm_model_without_data_is_an_error(capsys):
    rc = main(["eval", "--model", "deit_tiny_patch16_224", "--weights", "random", "--img-size", "32", "--quiet"])
    assert rc == 1 and "--data" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_testbed_json(tmp_path):
    """The README's main job: FP32 test bed top-1 written as JSON."""
    rc = main(["eval", "--quiet", "--json", str(tmp_path / "fp32.json")])
    data = json.loads((tmp_path / "fp32.json").read_text())
    assert rc == 0 and data["top1"] > 75 and data["model"] == "testbed"
