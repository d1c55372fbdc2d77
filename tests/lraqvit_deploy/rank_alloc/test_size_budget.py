"""A size budget for a named target: MLoRQ plans in the target's forms, sized as the built program."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import TensorDataset

from conftest import images, make_tiny
from lraqvit_deploy import Recipe, compress
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.layers import QuantLinear
from lraqvit_deploy.lowrank import DistillConfig
from lraqvit_deploy.quant.forms import form_problem, program_bytes, WeightForm
from lraqvit_deploy.rank_alloc import collect_stats, encoder_linears
from lraqvit_deploy.rank_alloc.mlorq import InfeasibleBudget, mlorq_candidates, size_plan
from lraqvit_deploy.recipe import AllocationConfig


def _plan(model, mb, target, **kw):
    linears = encoder_linears(model)
    stats = collect_stats(model, images(model, 16), linears, progress=False)
    return size_plan(model, linears, stats, mb, target, progress=False, **kw), linears


def _compress(model, mb, target, train_data=None, **kw):
    recipe = Recipe(allocation=AllocationConfig(size_budget_mb=mb, target=target, calib_images=16), **kw)
    return compress(model, recipe, alloc_data=images(model, 16), evaluate=False, progress=False,
                    train_data=train_data)


def _forms(model):
    return {n: (WeightForm(m.w_bits, m.w_group_size), m) for n, m in model.named_modules() if isinstance(m, QuantLinear)}


@pytest.mark.parametrize("frac", [0.42, 0.3])
def test_android_plan_fits_the_budget_in_forms_xnnpack_runs_and_its_size_is_the_built_size(frac, tmp_path):
    pytest.importorskip("executorch")
    from lraqvit_deploy.backends.executorch.export import lower_to_xnnpack

    model = make_tiny("vit")
    budget = program_bytes(model) * frac / 1e6
    report = _compress(model, budget, "android")
    planned = report.compression["planned_size_mb"]
    assert planned <= budget
    forms = _forms(model)
    assert forms and all(form_problem("android", f, m.in_features, m.act_scheme) is None for f, m in forms.values())
    assert all(m.act_scheme == "per_token_dynamic" and not m.act_symmetric for _, m in forms.values())
    built = len(lower_to_xnnpack(model, "q8").buffer) / 1e6
    assert abs(planned / built - 1) < 0.05, (planned, built)
    if frac == 0.3:  # a tight budget needs 4-bit weights somewhere
        assert any(f.bits == 4 for f, _ in forms.values())


def test_jetson_plan_is_int8_only_carries_per_tensor_scales_and_builds(tmp_path):
    pytest.importorskip("onnxruntime")
    from lraqvit_deploy import build
    from lraqvit_deploy.backends.tensorrt.backend import JetsonBuildOptions

    model = make_tiny("vit")
    _compress(model, program_bytes(model) * 0.4 / 1e6, "jetson")
    forms = _forms(model)
    assert forms and {f for f, _ in forms.values()} == {WeightForm(8)}
    assert all(float(m.tensor_act_scale) != 1.0 and float(m.tensor_act_scale) > 0 for _, m in forms.values())
    m = build(model, tmp_path / "j", JetsonBuildOptions(progress=False)).manifest  # Q/DQ ONNX, checked in onnxruntime
    assert (tmp_path / "j" / "manifest.json").is_file() and m["format"].startswith("lraqvit-deploy/jetson")


def test_infeasible_budget_names_the_smallest_feasible_size_which_then_plans():
    model = make_tiny("vit")
    with pytest.raises(InfeasibleBudget) as e:
        _plan(model, 0.01, "android")
    msg = str(e.value)
    assert "\n" not in msg and "smallest android program" in msg
    smallest = float(msg.rsplit("give at least ", 1)[1].rstrip("."))
    (plan, planned), _ = _plan(model, smallest, "android")  # the size it names plans
    assert planned <= smallest * 1e6


def test_budget_needs_a_target_and_excludes_the_other_knobs():
    with pytest.raises(DeployError, match="size of a built program: give target = android or jetson"):
        AllocationConfig(size_budget_mb=10)
    with pytest.raises(DeployError, match="either size_budget_mb"):
        AllocationConfig(size_budget_mb=10, target="android", memory_budget_mb=10)
    with pytest.raises(DeployError, match="energy"):
        AllocationConfig(method="energy", size_budget_mb=10, target="android")
    assert AllocationConfig(size_budget_mb=10, target="jetson").method == "mlorq"


def test_candidates_are_cached_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("LRAQVIT_CACHE", str(tmp_path))
    model = make_tiny("vit")
    linears = encoder_linears(model)
    stats = collect_stats(model, images(model, 8), linears, progress=False)
    first = mlorq_candidates(linears, stats, progress=False, target="android")
    assert len(list((tmp_path / "mlorq").glob("*.json"))) == len(linears)
    import lraqvit_deploy.rank_alloc.mlorq as mlorq

    def searched(*a, **k):
        raise RuntimeError("searched again")

    monkeypatch.setattr(mlorq, "layer_candidates", searched)
    again = mlorq_candidates(linears, stats, progress=False, target="android")
    assert again == first
    with pytest.raises(RuntimeError, match="searched again"):  # other settings are another key: searched
        mlorq_candidates(linears, stats, progress=False, target="jetson")


def test_mlorq_with_distillation_trains_the_planned_ranks_then_quantizes(one_thread):
    model = make_tiny("vit")
    teacher = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g))
    budget = program_bytes(model) * 0.3 / 1e6
    report = _compress(model, budget, "android", distill=DistillConfig(steps=3, batch_size=8), train_data=ds)
    info = report.compression
    assert info["distill"]["steps"] == 3 and info["planned_size_mb"] <= budget
    assert _forms(model)
    x = images(model, 4)
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()
        assert not torch.equal(model(x), teacher(x))


TINY = ["--model", "deit_tiny_patch16_224", "--weights", "random", "--img-size", "32", "--num-classes", "10"]


def test_cli_size_budget_is_one_line_when_infeasible_and_target_needs_a_budget(tmp_path, capsys):
    from lraqvit_deploy.cli.main import main

    rc = main(["compress", *TINY, "--out", str(tmp_path / "o"), "--quiet", "--target", "android"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "--size-budget-mb" in err
    rc = main(["compress", *TINY, "--out", str(tmp_path / "o"), "--quiet", "--size-budget-mb", "0.01", "--target",
               "android", "--alloc-calib-data", "fashion-mnist:train", "--alloc-calib-images", "8"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "give at least" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_build_manifest_reports_planned_beside_built(tmp_path):
    pytest.importorskip("executorch")
    from lraqvit_deploy import build
    from lraqvit_deploy.backends.executorch.backend import AndroidBuildOptions

    model = make_tiny("vit")
    budget = round(program_bytes(model) * 0.35 / 1e6, 4)
    _compress(model, budget, "android")
    m = build(model, tmp_path / "b", AndroidBuildOptions(arm_verify=False, progress=False)).manifest
    assert m["size_budget_mb"] == budget and m["planned_size_mb"] <= budget
    assert abs(m["size_mb"] / m["planned_size_mb"] - 1) < 0.05 and m["size_mb"] <= budget * 1.05
    assert m["weight_forms"] and set(m["weight_forms"]) <= {"w8", "w4", "w4g32", "w4g64", "w4g128"}
