"""`compress(model, recipe, ...)`: the pipeline as one call; inputs checked before any heavy work."""
import pytest
import torch
import torch.nn as nn

from lraqvit_deploy.lowrank import DistillConfig, LowRankConfig
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.pipeline import compress, quantize
from lraqvit_deploy.quant import quant_config
from lraqvit_deploy.recipe import Recipe

from conftest import make_tiny
from lraqvit_deploy.model_info import model_info

# the `deploy compress --json` keys: a stable interface (the table harness and users read them)
JSON_KEYS = {"model", "method", "param_reduction_target", "top1", "baseline_top1", "top1_diff", "fp32_top1", "quant",
             "params", "baseline_params", "param_reduction", "gflops", "baseline_gflops", "size_mb",
             "baseline_size_mb", "n_images", "kd_steps", "kd_final_loss", "kd_seconds", "kd_world_size",
             "calib_seconds", "wads_seconds", "out", "skipped_images", "ranks",
             "probe_top1", "top1_diff_ci95", "top1_diff_mcnemar_p",  # issue 13: added, none removed
             "size_budget_mb", "target", "planned_size_mb", "weight_forms",  # issue 23: added, none removed
             "stage_seconds"}  # issue 25

pytestmark = pytest.mark.usefixtures("one_thread")


def calib(model, n=8):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_low_rank_plus_int8_without_eval_data(tmp_path):
    model = make_tiny("vit")
    dense = sum(p.numel() for p in model.parameters())
    report = compress(model, Recipe(LowRankConfig("lra", param_reduction=0.3), quant=quant_config("per-token")),
                      calib_data=calib(model), out=tmp_path / "a", progress=False)
    d = report.to_dict()
    assert set(d) == JSON_KEYS
    assert not report.evaluated and d["top1"] is None and d["quant"] == "per-token"
    assert d["baseline_params"] == dense and 0.2 < d["param_reduction"] < 0.4
    assert d["size_mb"] < d["params"] * 4 / 1e6  # INT8 weights count one byte
    assert (tmp_path / "a" / "manifest.json").is_file() and d["out"] == str(tmp_path / "a")
    from lraqvit_deploy.artifacts import load_model_artifact

    x = calib(model, 2)
    torch.testing.assert_close(load_model_artifact(tmp_path / "a")(x), model(x))


def test_evaluates_beside_the_dense_baseline():
    from torch.utils.data import TensorDataset

    model = make_tiny("vit")
    g = torch.Generator().manual_seed(1)
    ds = TensorDataset(torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g))
    report = compress(model, Recipe(LowRankConfig("lra", param_reduction=0.3)), eval_data=ds, progress=False)
    m = report.metrics
    assert report.evaluated and m["n_images"] == 16 and m["baseline_top1"] is not None
    assert m["top1_diff"] == pytest.approx(m["top1"] - m["baseline_top1"])
    lo, hi = m["top1_diff_ci95"]  # paired over the same 16 images
    assert lo <= m["top1_diff"] <= hi and 0.0 <= m["top1_diff_mcnemar_p"] <= 1.0
    assert m["probe_top1"] is None  # only the test bed has a probe-only figure


@pytest.mark.parametrize("recipe, kwargs, words", [
    (Recipe(), {}, "nothing to do"),
    (Recipe(LowRankConfig("lra", param_reduction=0.3), distill=DistillConfig(steps=2)), {}, "--train-data"),
    (Recipe(quant=quant_config("naive")), {}, "--calib-data"),
    (Recipe(LowRankConfig("lra", param_reduction=0.3)), {"eval_limit": 0}, "positive number"),
    (Recipe(LowRankConfig("lra", param_reduction=0.3)), {"eval_data": 42}, "must be a Dataset"),
])
def test_bad_inputs_fail_before_any_work(recipe, kwargs, words):
    model = make_tiny("vit")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DeployError, match=words):
        compress(model, recipe, progress=False, **kwargs)
    assert isinstance(model.blocks[0].attn.qkv, nn.Linear)  # nothing was changed
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_quantize_once_and_artifacts_only_quantize(tmp_path):
    model = make_tiny("vit")
    quantize(model, quant_config("per-token"), calib(model))
    assert model_info(model).quant["config"]["method"] == "per-token"
    with pytest.raises(DeployError, match="already quantized"):
        compress(model, Recipe(quant=quant_config("wads")), calib_data=calib(model), progress=False)
    other = make_tiny("vit")
    compress(other, Recipe(LowRankConfig("lra", param_reduction=0.3)), out=tmp_path / "fp32", progress=False)
    from lraqvit_deploy.artifacts import load_model_artifact

    art = load_model_artifact(tmp_path / "fp32")
    with pytest.raises(DeployError, match="re-compressing it is not supported"):
        compress(art, Recipe(LowRankConfig("lra", param_reduction=0.3)), progress=False)
    rep = compress(art, Recipe(quant=quant_config("per-token")), calib_data=calib(art), progress=False)
    assert rep.compression["method"] == "lra" and rep.metrics["quant"] == "per-token"


@pytest.mark.parametrize("quant", [None, "per-token"])
def test_attention_that_reads_qkv_weight_is_rewritten_and_compresses(tmp_path, quant):
    """timm's Eva with separate q/v biases (DINOv3 *_qkvb) computes F.linear(x, qkv.weight, cat(q_bias, 0, v_bias)):
    replacing qkv crashed in the forward pass, then it was refused; now `models.attention` gives it a real qkv
    Linear with that bias (issue 27), so low rank and INT8 apply like on any ViT, and the artifact is written."""
    from lraqvit_deploy.models import create_model

    recipe = Recipe(low_rank=LowRankConfig("lra", param_reduction=0.3), quant=quant and quant_config(quant))
    m = create_model("vit_tiny_patch16_dinov3_qkvb", "random", num_classes=4, img_size=32)
    rep = compress(m, recipe, calib_data=torch.randn(2, 3, 32, 32), out=tmp_path / "a", progress=False)
    assert (tmp_path / "a" / "manifest.json").is_file() and 0.2 < rep.metrics["param_reduction"] < 0.4
    assert torch.isfinite(m(torch.randn(1, 3, 32, 32))).all()
