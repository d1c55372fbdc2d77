"""Non-finite values are failures everywhere: saving, evaluating and building a model whose weights or outputs
hold a NaN or an inf is refused in one line (lraqvit_deploy/finite.py), and the clean model passes."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import make_tiny
from lraqvit_deploy.artifacts import MANIFEST, MODEL_FILE, save_model_artifact
from lraqvit_deploy.cli.main import main
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.finite import below, check_finite_outputs, check_finite_weights, nonfinite_rows, nonfinite_tensors
from lraqvit_deploy.io import sha256_file

TINY = "blocks.0.attn.qkv.weight"


def test_below_fails_nan_none_and_minus_inf():
    assert not below(0.99, 0.95) and not below(0.95, 0.95) and not below(math.inf, 60.0)
    assert below(0.94, 0.95)
    for bad in (math.nan, float("nan"), None, -math.inf, "n/a"):
        assert below(bad, 0.0), bad  # `bad < 0.0` is False for NaN: the bug every gate had
    assert not (math.nan < 0.95)  # why `<` cannot be used


def test_nonfinite_tensors_and_rows():
    sd = {"a": torch.zeros(4), "b": torch.tensor([1.0, math.nan, math.inf, -math.inf]), "i": torch.zeros(3, dtype=torch.long)}
    assert nonfinite_tensors(sd.items()) == [("b", 1, 2, 4)]
    with pytest.raises(DeployError, match=r"b \(1 NaN and 2 inf of 4\); fix it") as e:
        check_finite_weights(sd, "the model", "fix it")
    assert "\n" not in str(e.value)
    check_finite_weights({"a": torch.ones(2)}, "the model", "fix it")  # finite: no error
    logits = torch.zeros(5, 3)
    logits[1, 2], logits[3, 0] = math.nan, -math.inf
    assert nonfinite_rows(logits) == 2 and nonfinite_rows(logits.numpy()) == 2 and nonfinite_rows(torch.ones(2, 2)) == 0


def _nan_model(family="vit", where=TINY, value=math.nan):
    model = make_tiny(family)
    with torch.no_grad():
        model.get_parameter(where).view(-1)[0] = value
    return model


def test_save_refuses_non_finite_weights_and_writes_nothing(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier artifact")
    for value in (math.nan, math.inf):
        with pytest.raises(DeployError, match=f"refusing to save .*{TINY} .*nothing was written") as e:
            save_model_artifact(out, _nan_model(value=value))
        assert "\n" not in str(e.value)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    save_model_artifact(tmp_path / "clean", make_tiny("vit"))  # the control: a finite model saves


def test_scales_are_weights_too(tmp_path):
    """A QuantLinear scale (a buffer) that is inf is refused like a weight."""
    from lraqvit_deploy.layers import QuantLinear

    model = make_tiny("vit")
    q = QuantLinear.from_linear(model.blocks[0].mlp.fc1, "per_token_dynamic")
    q.w_scale[3] = math.inf
    model.blocks[0].mlp.fc1 = q
    with pytest.raises(DeployError, match=r"blocks\.0\.mlp\.fc1\.w_scale \(1 inf"):
        save_model_artifact(tmp_path / "a", model)


def test_outputs_check_names_the_weights():
    model = _nan_model()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    with pytest.raises(DeployError, match=f"not finite: NaN/inf logits on 2 of 2 images.*{TINY}"):
        check_finite_outputs(logits, "the model", model)
    clean = make_tiny("vit")
    with pytest.raises(DeployError, match="weights are finite, so an activation overflowed"):  # inf input
        check_finite_outputs(torch.tensor([[math.inf, 0.0]]), "the model", clean)
    check_finite_outputs(torch.zeros(2, 3), "the model", clean)


def poisoned_artifact(tmp_path, name="nan-art", value=math.nan):
    """A valid artifact folder (sha256 matching) whose weights hold `value`: what a diverged run saved before
    `deploy compress` refused to, or a file edited by hand."""
    from safetensors.torch import load_file, save_file

    art = tmp_path / name
    save_model_artifact(art, make_tiny("deit"))
    tensors = load_file(art / MODEL_FILE)
    tensors[TINY].view(-1)[0] = value
    save_file(tensors, art / MODEL_FILE)
    man = json.loads((art / MANIFEST).read_text())
    man["files"][MODEL_FILE]["sha256"] = sha256_file(art / MODEL_FILE)
    (art / MANIFEST).write_text(json.dumps(man))
    return art


def _one_line_error(capsys, prog: str, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"deploy {prog}: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_eval_refuses_a_nan_artifact_in_one_line(tmp_path, capsys):
    art = poisoned_artifact(tmp_path)
    args = ["--data", "fashion-mnist:test", "--limit", "8", "--quiet"]
    assert main(["eval", str(art), *args]) == 1
    _one_line_error(capsys, "eval", "outputs are not finite", TINY)
    clean = tmp_path / "clean"
    save_model_artifact(clean, make_tiny("deit"))
    assert main(["eval", str(clean), *args]) == 0  # the control: the same artifact without the NaN evaluates


@pytest.mark.parametrize("target", ["android", "jetson"])
def test_build_refuses_a_nan_artifact_before_lowering(tmp_path, capsys, target, monkeypatch):
    from lraqvit_deploy.backends.executorch.backend import AndroidBackend
    from lraqvit_deploy.backends.tensorrt.backend import JetsonBackend

    lowered = []
    for cls in (AndroidBackend, JetsonBackend):  # the check must come before any lowering
        monkeypatch.setattr(cls, "build", lambda self, *a, **k: lowered.append(1))
    for value in (math.nan, -math.inf):
        art = poisoned_artifact(tmp_path, f"art{value}", value)
        out = tmp_path / f"out-{target}"
        assert main(["build", "--target", target, str(art), "--out", str(out), "--quiet"]) == 1
        _one_line_error(capsys, "build", f"refusing to build {art}", TINY, "nothing was lowered")
        assert not out.exists() and not lowered
    clean = tmp_path / "clean"
    save_model_artifact(clean, make_tiny("deit"))
    main(["build", "--target", target, str(clean), "--out", str(tmp_path / "c"), "--quiet"])
    assert lowered  # the control: the finite artifact reaches the lowering
