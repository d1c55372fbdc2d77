"""Harness config validation and planning: content-hash keys, reuse across tables, target reasons."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.table import load_config, make_plan, parse_config
from lraqvit_deploy.recipe import Recipe

BENCH_TOML = Path(__file__).parents[3] / "benchmarks" / "table4.toml"


def base(**over):
    d = {
        "models": {"testbed": {}},
        "methods": {"fp32": {}, "rb-lra": {"compress": "rb-lra", "param_reduction": 0.45},
                    "rb-lra-wads": {"compress": "rb-lra", "param_reduction": 0.45, "quant": "wads"}},
        "targets": {"host": {}},
    }
    d.update(over)
    return d


def keys(plan):
    return {(s.kind, s.method, s.column or s.target): s.key for s in plan.steps}


def test_benchmark_config_plans_the_paper_tables(tmp_path):
    cfg = load_config(BENCH_TOML)
    assert cfg.table4[:3] == ("fp32", "rb-lra", "rb-lra-wads") and cfg.baseline == "fp32"
    assert [cfg.method(m).precision for m in cfg.table4[:3]] == ["FP32", "FP32", "INT8"]
    assert [t.id for t in cfg.accuracy] == ["table1", "table2", "table9"]
    plan = make_plan(cfg, tmp_path)
    kinds = [s.kind for s in plan.steps]
    n = len(cfg.table4)
    assert kinds.count("bench") == n and kinds.count("build") == n  # host only; one Android build per method
    builds = {s.method: s for s in plan.steps if s.kind == "build"}
    # the PT2E row reuses the RB-LRA compression and differs only in its build
    assert builds["rb-lra-pt2e"].deps == builds["rb-lra"].deps
    assert builds["rb-lra-pt2e"].spec["options"] == {"precision": "q8"} and builds["rb-lra"].spec["options"] == {}
    # every recipe is compressed once, however many tables and methods use it
    recipes = {str(cfg.method(m).recipe_dict()) for m in cfg.all_methods() if not cfg.method(m).dense}
    assert kinds.count("compress") == len(recipes) == 9
    # Table 4's steps come first, so its table is complete early in a long run
    first_other = next(i for i, s in enumerate(plan.steps) if s.method not in cfg.table4)
    assert all(s.method not in cfg.table4 or s.kind == "eval" for s in plan.steps[first_other:])
    assert plan.cells[("testbed", "fp32", "android")].startswith("no Android serial configured")


def test_keys_follow_content(tmp_path):
    a = keys(make_plan(parse_config(base()), tmp_path))
    assert a == keys(make_plan(parse_config(base()), tmp_path / "elsewhere"))  # content, not location
    changed = base()
    changed["methods"]["rb-lra"] = {"compress": "rb-lra", "param_reduction": 0.30}
    b = keys(make_plan(parse_config(changed), tmp_path))
    differ = {k for k in a if a[k] != b.get(k)}
    assert differ == {("compress", "rb-lra", None), ("build", "rb-lra", "android"), ("bench", "rb-lra", "host")}
    more = base(settings={"iterations": 50})
    c = keys(make_plan(parse_config(more), tmp_path))
    assert {k for k in a if a[k] != c[k]} == {k for k in a if k[0] == "bench"}  # artifacts are reused


def test_identical_recipes_share_steps(tmp_path):
    d = base()
    d["methods"]["same"] = dict(d["methods"]["rb-lra"], label="RB-LRA again")
    d["accuracy"] = {"t": {"methods": ["rb-lra", "same"]}}
    plan = make_plan(parse_config(d), tmp_path)
    assert plan.metrics[("testbed", "rb-lra")] is plan.metrics[("testbed", "same")]


def test_steps_describe_valid_library_calls(tmp_path):
    """Every step's spec builds the library objects the runner passes on (recipes, options)."""
    from lraqvit_deploy.backends import options_type

    plan = make_plan(parse_config(base(settings={"threads": 1, "work_threads": 2, "eval_limit": 8})), tmp_path)
    for step in plan.steps:
        if step.kind == "compress":
            recipe = Recipe.from_dict(step.spec["recipe"])
            assert recipe.quant is None or step.deps  # quantization always starts from the FP32 artifact
            assert step.spec["eval_limit"] == 8
        elif step.kind == "build":
            options_type(step.target, "build").from_dict(step.spec["options"])
        elif step.kind == "bench":
            assert step.spec["threads"] == 1


@pytest.mark.parametrize("patch, message", [
    ({"models": {}}, "at least one model"),
    ({"colour": 1}, "unknown key(s) ['colour']"),
    ({"table4": {"methods": ["fp32", "nope"]}}, "method 'nope' is not defined"),
    ({"methods": {"x": {"compress": "svd", "param_reduction": 0.4}}}, "compress = 'svd'"),
    ({"methods": {"x": {"compress": "lra"}}}, "needs param_reduction"),
    ({"methods": {"x": {"compress": "lra", "param_reduction": 45}}}, "param_reduction = 45.0: must be < 1 (a fraction in (0, 1)"),
    ({"methods": {"x": {"quant": "int4"}}}, "quant = 'int4'"),
    ({"targets": {"jetson": {"results": "a/{model}.json", "local": True}}}, "not both"),
    ({"targets": {"phone": {}}}, "unknown key(s) ['phone']"),
    ({"targets": {"jetson": {"results": "x/{name}.json"}}}, "is not a pattern with {model} and {method}"),
    ({"settings": {"iterations": 0}}, "[settings]: iterations = 0: must be >= 1"),
    ({"settings": {"eval_args": ["--limit", "8"]}}, "use eval_data"),
    ({"settings": {"train_data": 3}}, "train_data = 3: expected a string (distillation + calibration images: an ImageFolder path or fashion-mnist:train"),
    ({"settings": {"train_limit": 0}}, "train_limit = 0: must be >= 1"),
    ({"models": {"testbed": {"args": ["--weights", "random"]}}}, "is no longer read"),
    ({"models": {"deit_tiny_patch16_224": {"img_size": -3}}}, "img_size = -3"),
    ({"methods": {"x": {"compress": "lra", "param_reduction": 0.3, "kd_steps": -1}}}, "kd_steps = -1"),
    ({"methods": {"x": {"build": {"precision": "int4"}}}}, "precision = 'int4'"),
    ({"methods": {"x": {"compress": "lra", "param_reduction": 0.3, "recipe": {"low_rank": {"rank": 3}}}}},
     "unknown key(s) ['rank']"),
])
def test_config_errors_name_the_key(patch, message):
    """One line naming the table and the key (the typed entries' own `option(...)` checks, or their validate)."""
    with pytest.raises(DeployError, match=None) as e:
        parse_config(base(**patch))
    assert message in str(e.value)


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(DeployError, match="config not found"):
        load_config(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("[models\n")
    with pytest.raises(DeployError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_target_reasons_and_columns(tmp_path):
    plan = make_plan(parse_config(base(targets={"android": {"serials": ["A1", "B2"]}})), tmp_path)
    assert plan.columns == ["android:A1", "android:B2", "jetson", "host"]
    assert plan.cells[("testbed", "fp32", "host")] == "host disabled in the config"
    bench = plan.cells[("testbed", "fp32", "android:B2")]
    assert bench.spec["serial"] == "B2"
    assert plan.cells[("testbed", "fp32", "jetson")].startswith("no Jetson configured")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_jetson_local_without_tensorrt(tmp_path):
    plan = make_plan(parse_config(base(targets={"jetson": {"local": True}})), tmp_path)
    assert plan.cells[("testbed", "rb-lra", "jetson")].startswith("TensorRT is not installed here")
    assert not any(s.target == "jetson" for s in plan.steps)  # nothing is built for it


def test_jetson_local_plan_when_tensorrt_present(tmp_path, monkeypatch):
    """On a Jetson (TensorRT importable) the harness builds and times there, each row at its precision."""
    import lraqvit_deploy.table.plan as plan_mod

    real = importlib.util.find_spec
    monkeypatch.setattr(plan_mod.importlib.util, "find_spec", lambda n, *a: object() if n == "tensorrt" else real(n, *a))
    plan = make_plan(parse_config(base(targets={"jetson": {"local": True}})), tmp_path)
    benches = {s.method: s for s in plan.steps if s.kind == "bench" and s.target == "jetson"}
    assert [benches[m].deps[0].target for m in benches] == ["jetson"] * 3
    assert benches["rb-lra-wads"].spec["jetson_precision"] == "int8"
    assert benches["fp32"].spec["jetson_precision"] == "fp32"


def test_quant_methods_quantize_the_shared_fp32_artifact(tmp_path):
    """Distillation runs once; every quant method quantizes that artifact (a quantization-only recipe)."""
    plan = make_plan(parse_config(base()), tmp_path)
    fp32, wads = plan.metrics[("testbed", "rb-lra")], plan.metrics[("testbed", "rb-lra-wads")]
    assert wads.deps == (fp32,) and not fp32.deps
    assert [s.kind for s in plan.steps].count("compress") == 2
    assert Recipe.from_dict(wads.spec["recipe"]).quant.method == "wads"
    assert not Recipe.from_dict(wads.spec["recipe"]).compresses and Recipe.from_dict(fp32.spec["recipe"]).quant is None
    assert plan.steps.index(fp32) < plan.steps.index(wads)


def test_training_images_reach_every_compress_step_only_when_set(tmp_path):
    """[settings] train_data/train_limit go into the compress steps' specs (so into their cache keys)."""
    plain = make_plan(parse_config(base()), tmp_path)
    assert all("train_data" not in s.spec for s in plain.steps)  # configs without them keep their keys
    cfg = parse_config(base(settings={"train_data": "fashion-mnist:train", "train_limit": 500}))
    steps = [s for s in make_plan(cfg, tmp_path).steps if s.kind == "compress"]
    assert steps and all(s.spec["train_data"] == "fashion-mnist:train" and s.spec["train_limit"] == 500
                         for s in steps)
    assert {s.key for s in steps}.isdisjoint({s.key for s in plain.steps})


def test_method_tables_are_typed_and_digests_are_stable(tmp_path):
    """`recipe` / `build` are the TOML tables themselves (no JSON text); the config digest stays what it was
    when they were kept as JSON, so `deploy table --resume` continues runs recorded before."""
    import hashlib
    import json
    from dataclasses import asdict

    from lraqvit_deploy.table.config import MethodEntry, Settings

    cfg = load_config(BENCH_TOML)
    pt2e = cfg.method("rb-lra-pt2e")
    assert pt2e.build == {"precision": "q8"} and pt2e.build_object().precision == "q8"
    assert isinstance(pt2e.recipe, dict) and cfg.method("rb-lra").recipe_object().low_rank.method == "rb-lra"
    assert cfg.method("fp32").recipe_object() is None
    old = asdict(cfg)
    old.pop("source")
    for m in old["methods"].values():
        m["recipe"], m["build"] = json.dumps(m["recipe"], sort_keys=True), json.dumps(m["build"], sort_keys=True)
    assert cfg.digest() == hashlib.sha256(json.dumps(old, sort_keys=True, default=str).encode()).hexdigest()
    pt2e.build_options()["precision"] = "fp32"  # a copy: the entry is not changed
    assert pt2e.build == {"precision": "q8"}
    assert Settings().iterations == 20 and MethodEntry("x", "X").dense
