"""`deploy compress` end to end (tiny DeiT, real Fashion-MNIST), reload by `deploy eval`, and `deploy build` wiring."""
import argparse
import json

import pytest
import torch

from lraqvit_deploy.cli.main import build_parser, main
from lraqvit_deploy.model_info import model_info

TINY = ["--model", "deit_tiny_patch16_224", "--weights", "random", "--img-size", "32", "--num-classes", "10",
        "--data", "fashion-mnist:test", "--limit", "32", "--threads", "1", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_compress_writes_an_artifact_that_eval_reloads(tmp_path):
    out, js = tmp_path / "rb", tmp_path / "rb.json"
    rc = main(["compress", *TINY, "--method", "rb-lra", "--param-reduction", "0.3", "--rank-multiple", "8",
               "--kd-steps", "3", "--kd-batch-size", "8", "--train-data", "fashion-mnist:train",
               "--train-limit", "64", "--out", str(out), "--json", str(js)])
    assert rc == 0
    res = json.loads(js.read_text())
    for key in ("top1", "baseline_top1", "params", "baseline_params", "gflops"):
        assert key in res
    assert 0.3 <= res["param_reduction"] < 0.35 and res["params"] < res["baseline_params"]
    assert res["gflops"] < res["baseline_gflops"]
    assert res["kd_steps"] == 3 and all(r % 8 == 0 for r in res["ranks"].values())
    manifest = json.loads((out / "manifest.json").read_text())
    comp = manifest["compression"]
    assert comp["method"] == "rb-lra" and comp["ranks"] == res["ranks"]
    assert comp["config"]["param_reduction"] == 0.3 and comp["distill"]["steps"] == 3
    assert manifest["metrics"]["top1"] == res["top1"]
    assert all(m["type"] == "low_rank_linear" for m in manifest["modules"].values())  # merged
    assert not (tmp_path / "rb.kd-checkpoint.pt").exists()

    ev = tmp_path / "eval.json"
    assert main(["eval", str(out), "--data", "fashion-mnist:test", "--limit", "32", "--quiet", "--json", str(ev)]) == 0
    again = json.loads(ev.read_text())
    assert again["top1"] == res["top1"] and again["params"] == res["params"]
    assert again["gflops"] == pytest.approx(res["gflops"])


def test_kd_without_training_data_is_a_clear_error(tmp_path, capsys):
    rc = main(["compress", *TINY, "--method", "lra", "--param-reduction", "0.3", "--out", str(tmp_path / "x")])
    assert rc == 1
    assert "--train-data" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_unreachable_reduction_is_a_clear_error(tmp_path, capsys):
    rc = main(["compress", *TINY, "--method", "lra", "--param-reduction", "0.97", "--kd-steps", "0",
               "--out", str(tmp_path / "x")])
    assert rc == 1 and "out of reach" in capsys.readouterr().err


def test_build_takes_the_compression_options():
    from lraqvit_deploy.cli.compress import recipe_from_args
    from lraqvit_deploy.pipeline import compress

    args = build_parser().parse_args(["build", "--target", "android", "--out", "o", "--method", "rb-lra",
                                      "--param-reduction", "0.45", "--kd-steps", "0"])
    recipe = recipe_from_args(args)
    assert recipe.low_rank.method == "rb-lra" and recipe.low_rank.param_reduction == 0.45 and recipe.distill is None
    from conftest import make_tiny

    model = make_tiny("vit")
    plain = argparse.Namespace(**{**vars(args), "method": None, "param_reduction": None})
    assert recipe_from_args(plain).empty
    compress(model, recipe, evaluate=False, progress=False)
    assert type(model.blocks[0].attn.qkv).__name__ == "LowRankLinear"
    assert model_info(model).compression["method"] == "rb-lra"


@pytest.mark.slow
def test_testbed_lra_without_kd(tmp_path):
    js = tmp_path / "lra.json"
    assert main(["compress", "--method", "lra", "--param-reduction", "0.3", "--kd-steps", "0", "--limit", "64",
                 "--threads", "1", "--quiet", "--out", str(tmp_path / "lra"), "--json", str(js)]) == 0
    res = json.loads(js.read_text())
    assert res["baseline_params"] == 21540490 and 0.3 <= res["param_reduction"] < 0.31


def test_compress_with_quant_reports_fp32_and_int8(tmp_path):
    """LRA then per-token INT8 in one command; the artifact reloads as the same quantized model."""
    out, js = tmp_path / "q", tmp_path / "q.json"
    rc = main(["compress", *TINY, "--method", "lra", "--param-reduction", "0.3", "--kd-steps", "0",
               "--quant", "per-token", "--calib-images", "8", "--calib-data", "fashion-mnist:train",
               "--out", str(out), "--json", str(js)])
    assert rc == 0
    res = json.loads(js.read_text())
    for key in ("top1", "baseline_top1", "fp32_top1", "size_mb", "baseline_size_mb"):
        assert key in res
    assert res["quant"] == "per-token"
    assert res["size_mb"] < res["baseline_size_mb"] / 2  # int8 factors on top of low rank
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"]["config"]["method"] == "per-token"
    assert any(m["type"] == "quant_linear" for m in manifest["modules"].values())
    ev = tmp_path / "eval.json"
    assert main(["eval", str(out), "--data", "fashion-mnist:test", "--limit", "32", "--quiet", "--json", str(ev)]) == 0
    assert json.loads(ev.read_text())["top1"] == res["top1"]


def test_quantize_an_existing_artifact(tmp_path):
    """`deploy compress ARTIFACT --quant ...` keeps the artifact's dense baseline numbers."""
    first = tmp_path / "lra"
    assert main(["compress", *TINY, "--method", "lra", "--param-reduction", "0.3", "--kd-steps", "0",
                 "--out", str(first), "--json", str(tmp_path / "a.json")]) == 0
    rc = main(["compress", str(first), "--quant", "naive", "--calib-images", "8", "--calib-data",
               "fashion-mnist:train", "--data", "fashion-mnist:test", "--limit", "32", "--quiet",
               "--out", str(tmp_path / "q"), "--json", str(tmp_path / "q.json")])
    assert rc == 0
    a, q = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "q.json"))
    assert q["baseline_top1"] == a["baseline_top1"] and q["baseline_params"] == a["baseline_params"]
    assert q["fp32_top1"] == a["top1"] and q["method"] == "lra"


def test_nothing_to_do_is_an_error(tmp_path, capsys):
    assert main(["compress", *TINY, "--out", str(tmp_path / "x")]) == 1
    assert "nothing to do" in capsys.readouterr().err


ALLOC = ["--alloc-calib-images", "16", "--alloc-calib-data", "fashion-mnist:train", "--kd-steps", "0"]


def test_energy_rank_allocation_meets_the_budget(tmp_path):
    js = tmp_path / "e.json"
    rc = main(["compress", *TINY, "--method", "lra", "--param-reduction", "0.3", "--rank-alloc", "energy", *ALLOC,
               "--out", str(tmp_path / "e"), "--json", str(js)])
    assert rc == 0
    res = json.loads(js.read_text())
    assert 0.3 <= res["param_reduction"] < 0.31
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["compression"]["config"]["svd"] == "activation"  # auto: whitened SVD with energy allocation
    assert manifest["compression"]["rank_alloc"]["method"] == "energy"


def test_activation_aware_svd_beats_plain_on_its_calibration_error(tmp_path):
    """--svd activation must give a smaller output error on the calibration images than --svd plain."""
    from conftest import make_tiny

    from lraqvit_deploy.lowrank import LowRankConfig, compress_
    from lraqvit_deploy.data import calibration_batch, load_dataset

    base = make_tiny("deit")
    images = calibration_batch(load_dataset("fashion-mnist:train", {**base.pretrained_cfg, "interpolation": "bilinear"}), 16)
    with torch.no_grad():
        ref = base.forward_features(images)
    errs = {}
    for svd in ("plain", "activation"):
        for method in ("lra", "rb-lra"):
            m = make_tiny("deit")
            compress_(m, LowRankConfig(method=method, param_reduction=0.3, svd=svd, init="zero"), images)
            with torch.no_grad():
                errs[svd, method] = (m.forward_features(images) - ref).pow(2).mean().item()
    assert errs["activation", "lra"] < errs["plain", "lra"]
    assert errs["activation", "rb-lra"] == pytest.approx(errs["activation", "lra"], rel=1e-4)  # same base, zero branch


def test_mlorq_allocation_under_a_memory_budget(tmp_path):
    js = tmp_path / "m.json"
    rc = main(["compress", *TINY, "--method", "lra", "--rank-alloc", "mlorq", "--memory-budget-mb", "4.0", *ALLOC,
               "--out", str(tmp_path / "m"), "--json", str(js)])
    assert rc == 0
    res = json.loads(js.read_text())
    assert res["size_mb"] < res["baseline_size_mb"]
