"""Cost tables (`deploy profile`): real programs in the real ExecuTorch runtime, tiny shapes, one round.

The timed fixture builds 11 one-cell programs (one 64 -> 64 shape on 5 tokens, every form, ranks at
half the break-even rank); the CLI test profiles deit_tiny at 32 px (4 shapes, FP32 only). The
lookups (interpolation, the measured break-even) are also checked on a hand-made table, where the
expected numbers are known exactly.
"""
from __future__ import annotations

import json
import math

import pytest

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.measure.costs import (FORMS, TABLE_FORMAT, CostTable, LinearShape, cached_table, cache_path,
                                          model_shapes, rank_grid)

pytest.importorskip("executorch.runtime")
from lraqvit_deploy.backends.executorch.cost_profile import profile_shapes  # noqa: E402

SHAPE = LinearShape(64, 64, 5)
FRACTIONS = (0.5,)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("cost-cache")
    before = os.environ.get("LRAQVIT_CACHE")
    os.environ["LRAQVIT_CACHE"] = str(root)
    yield root
    if before is None:
        del os.environ["LRAQVIT_CACHE"]
    else:
        os.environ["LRAQVIT_CACHE"] = before


@pytest.fixture(scope="module")
def table(cache_root) -> CostTable:
    return profile_shapes([SHAPE], threads=1, rounds=1, iterations=2, warmup=1, forms=FORMS, fractions=FRACTIONS,
                          progress=False)


def _stat_ok(stat):
    assert all(math.isfinite(stat[k]) and stat[k] > 0 for k in ("median_ms", "min_ms", "max_ms", "best_ms")), stat
    assert stat["best_ms"] <= stat["min_ms"] <= stat["median_ms"] <= stat["max_ms"]


def test_the_table_has_every_shape_form_and_rank(table):
    assert list(table.shapes) == [SHAPE.key]
    entry = table.shapes[SHAPE.key]
    assert (entry["in"], entry["out"], entry["tokens"]) == (64, 64, 5)
    assert sorted(entry["forms"]) == sorted(FORMS)
    for form, cell in entry["forms"].items():
        _stat_ok(cell["dense"])
        assert cell["ranks"] == rank_grid(SHAPE, form, FRACTIONS) and cell["ranks"], form
        assert sorted(cell["pairs"], key=int) == [str(r) for r in cell["ranks"]]
        for stat in cell["pairs"].values():
            _stat_ok(stat)
    assert entry["forms"]["fp32"]["dense"]["fp32_ratio"] == 1.0
    assert table.threads == 1 and table.target == "host"
    d = table.to_dict()
    assert d["format"] == TABLE_FORMAT and d["cpu_line"] and "executorch" in d["versions"]
    assert d["protocol"]["rounds"] == 1 and d["protocol"]["iterations"] == 2 and d["protocol"]["warmup"] == 1
    assert d["meta"]["cells"] == 11 and d["meta"]["profile_s"] > 0
    assert len(d["meta"]["load_avg"]["before"]) == 3 and len(d["meta"]["load_avg"]["after"]) == 3


def test_json_round_trips(table, tmp_path):
    path = table.save(tmp_path / "t.json")
    raw = json.loads(path.read_text())
    assert raw["shapes"][SHAPE.key]["forms"]["w8"]["dense"]["median_ms"] > 0
    back = CostTable.load(path)
    assert back.to_dict() == table.to_dict()
    assert back.cost_ms(64, 64, 5, "w4g32", 32) == table.cost_ms(64, 64, 5, "w4g32", 32)
    (tmp_path / "other.json").write_text(json.dumps({"format": "something/else"}))
    with pytest.raises(DeployError, match="not a cost table"):
        CostTable.load(tmp_path / "other.json")


def test_cost_ms_reads_the_measured_cells(table):
    cell = table.shapes[SHAPE.key]["forms"]["w8"]
    assert table.cost_ms(64, 64, 5, "w8") == cell["dense"]["median_ms"]
    r = cell["ranks"][0]
    assert table.cost_ms(64, 64, 5, "w8", r) == cell["pairs"][str(r)]["median_ms"]
    with pytest.raises(DeployError, match=r"no shape 64x65@5 .*64x64@5"):
        table.cost_ms(64, 65, 5, "w8")
    with pytest.raises(DeployError, match="no shape 64x64@6"):
        table.cost_ms(64, 64, 6, "w8", 16)
    with pytest.raises(DeployError, match="no form 'w4g64'"):
        table.cost_ms(64, 64, 5, "w4g64")
    with pytest.raises(DeployError, match="rank 65"):
        table.cost_ms(64, 64, 5, "w8", 65)


def _synthetic(dense: float, pairs: dict) -> CostTable:
    """A hand-made one-shape table: `pairs` {rank: median ms} for fp32 (best_ms: half the median)."""
    def stat(ms):
        return {"median_ms": ms, "min_ms": ms, "max_ms": ms, "best_ms": ms / 2, "fp32_ratio": ms / dense}
    ranks = sorted(pairs)
    forms = {"fp32": {"dense": stat(dense), "ranks": ranks, "pairs": {str(r): stat(pairs[r]) for r in ranks}}}
    shapes = {"384x1536@197": {"in": 384, "out": 1536, "tokens": 197, "break_even_rank": 307.2, "layers": [],
                               "forms": forms}}
    return CostTable("host", 1, {"model_name": "test"}, {"torch": "x"}, shapes)


def test_cost_ms_interpolates_linearly_over_the_rank_grid():
    t = _synthetic(4.0, {32: 1.0, 64: 2.0, 128: 6.0})
    assert t.cost_ms(384, 1536, 197, "fp32", 48) == pytest.approx(1.5)
    assert t.cost_ms(384, 1536, 197, "fp32", 96) == pytest.approx(4.0)
    assert t.cost_ms(384, 1536, 197, "fp32", 64) == pytest.approx(2.0)
    assert t.cost_ms(384, 1536, 197, "fp32", 8) == pytest.approx(1.0)  # below the grid: the smallest rank's cost
    assert t.cost_ms(384, 1536, 197, "fp32", 192) == pytest.approx(10.0)  # above: the last segment extended
    assert t.cost_ms(384, 1536, 197, "fp32") == 4.0
    assert t.cost_ms(384, 1536, 197, "fp32", 48, stat="best_ms") == pytest.approx(0.75)
    with pytest.raises(DeployError, match="stat 'mean_ms'"):
        t.cost_ms(384, 1536, 197, "fp32", 48, stat="mean_ms")


def test_break_even_rank_measured_is_the_first_rank_slower_than_dense():
    t = _synthetic(4.0, {32: 1.0, 64: 2.0, 128: 6.0, 192: 3.0})
    assert t.break_even_rank_measured((384, 1536, 197), "fp32") == 128
    assert t.break_even_rank_measured("384x1536@197", "fp32") == 128
    assert _synthetic(4.0, {32: 1.0, 64: 2.0}).break_even_rank_measured(LinearShape(384, 1536, 197), "fp32") is None
    with pytest.raises(DeployError, match="no shape"):
        t.break_even_rank_measured((384, 384, 197), "fp32")


def test_cells_kept_in_cell_dir_are_built_once(tmp_path, cache_root, monkeypatch):
    """A second profile (another thread count) with the same `cell_dir` times the kept programs, lowering none."""
    import lraqvit_deploy.backends.executorch.cost_profile as costs

    first = profile_shapes([SHAPE], threads=1, rounds=1, iterations=2, warmup=1, forms=("fp32",), fractions=FRACTIONS,
                           progress=False, cell_dir=tmp_path)
    kept = sorted(p.name for p in tmp_path.rglob("*.pte"))
    assert len(kept) == 1 + len(first.shapes[SHAPE.key]["forms"]["fp32"]["ranks"]), kept

    def no_build(*a, **k):
        raise AssertionError("a kept cell was lowered again")
    monkeypatch.setattr(costs, "build_cell", no_build)
    again = profile_shapes([SHAPE], threads=2, rounds=1, iterations=2, warmup=1, forms=("fp32",), fractions=FRACTIONS,
                           progress=False, cell_dir=tmp_path)
    assert again.threads == 2 and set(again.shapes[SHAPE.key]["forms"]) == {"fp32"}
    assert sorted(p.name for p in tmp_path.rglob("*.pte")) == kept
    with pytest.raises(AssertionError, match="lowered again"):  # a form not kept is built: here, the spy refuses
        profile_shapes([SHAPE], threads=1, rounds=1, iterations=2, warmup=1, forms=("w8",), fractions=FRACTIONS,
                       progress=False, cell_dir=tmp_path)


def test_more_threads_scale_one_thread_cells_by_the_whole_models_speedup(tmp_path, cache_root):
    """At 2 threads the cells are timed at 1 thread and scaled by a whole model's measured speedup in their form
    (dense cells by the dense model's, pair cells by the all-pairs model's): the table says so and keeps both."""
    from lraqvit_deploy.backends.executorch.cost_profile import THREAD_SCALING, profile_costs
    from lraqvit_deploy.model_info import record
    from lraqvit_deploy.models import ModelSpec, build_architecture

    # one block, mlp_ratio 1: two shapes (64x64, 64x192), so 12 cells and four small whole models to lower
    spec = ModelSpec("deit_tiny_patch16_224", "deit_tiny_patch16_224", dict(
        img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=2, mlp_ratio=1.0, num_classes=10), "random")
    model = build_architecture(spec)
    record(model, spec=spec)
    table = profile_costs(model, threads=2, rounds=1, iterations=2, warmup=1, forms=("fp32", "w8"), fractions=FRACTIONS,
                          progress=False, cache=False, cell_dir=tmp_path)
    ts = table.meta["thread_scaling"]
    assert table.threads == 2 and table.protocol["threads"] == THREAD_SCALING and ts["cells_timed_at_threads"] == 1
    for form in ("fp32", "w8", "pairs-fp32", "pairs-w8"):  # dense cells by the dense model, pairs by the all-pairs one
        one, two = ts["whole_ms_at_1_thread"][form]["median_ms"], ts["whole_ms"][form]["median_ms"]
        assert ts["speedup"][form] == pytest.approx(one / two, rel=1e-3)
    assert set(table.whole) == {"fp32", "w8"} and table.whole["w8"] == ts["whole_ms"]["w8"]
    for entry in table.shapes.values():
        for cell in entry["forms"].values():
            for stat in [cell["dense"], *cell["pairs"].values()]:
                _stat_ok(stat)
    one_thread = profile_costs(model, threads=1, rounds=1, iterations=2, warmup=1, forms=("fp32", "w8"),
                               fractions=FRACTIONS, progress=False, cache=False, cell_dir=tmp_path)
    assert one_thread.threads == 1 and "thread_scaling" not in one_thread.meta and "threads" not in one_thread.protocol


def test_rank_grid():
    s = LinearShape(384, 1536, 197)  # break-even 307.2
    for form in ("fp32", "w8", "w4"):
        g = rank_grid(s, form)
        assert g == sorted(set(g)) and all(r % 2 == 0 and 2 <= r <= 384 for r in g)
        assert any(r % 32 == 0 for r in g) and max(g) == 308 and min(g) == 38
    assert all(r % 32 == 0 for r in rank_grid(s, "w4g32")) and rank_grid(s, "w4g32")
    assert rank_grid(LinearShape(64, 64, 5), "fp32", (0.5,)) == [16, 32]


def test_model_shapes_of_a_timm_vit():
    from lraqvit_deploy import create_model

    model = create_model("deit_tiny_patch16_224", weights="random", img_size=32)
    shapes = model_shapes(model)
    assert {s.key: len(names) for s, names in shapes.items()} == {
        "192x192@5": 12, "192x576@5": 12, "192x768@5": 12, "768x192@5": 12}
    assert "blocks.0.attn.qkv" in shapes[LinearShape(192, 576, 5)]


def test_cached_table_finds_a_saved_table_for_this_host_only(table, cache_root):
    assert cached_table("host", 1, [SHAPE]) is None  # profile_shapes alone does not cache
    table.save(cache_path("host", 1, [SHAPE]))
    hit = cached_table("host", 1, [SHAPE])
    assert hit is not None and hit.to_dict() == table.to_dict()
    assert cached_table("host", 1, [SHAPE], forms=("fp32",)) is not None  # a table with more forms covers fewer
    assert cached_table("host", 2, [SHAPE]) is None  # another thread count
    assert cached_table("host", 1, [SHAPE, LinearShape(64, 128, 5)]) is None  # a shape it lacks


# ---- the command -------------------------------------------------------------------------------------
def _run(argv, capsys):
    from lraqvit_deploy.cli.main import main

    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("argv, names", [
    (["--model", "no_such_vit"], "no_such_vit"),
    (["--model", "deit_tiny_patch16_224", "--threads", "0"], "--threads"),
    (["--model", "deit_tiny_patch16_224", "--rounds", "0"], "--rounds"),
    (["--model", "deit_tiny_patch16_224", "--img-size", "-3"], "--img-size"),
    (["--model", "deit_tiny_patch16_224", "--rank-fractions", "0"], "--rank-fractions"),
    (["--model", "deit_tiny_patch16_224", "--target", "jetson"], "--target"),
    (["--model", "deit_tiny_patch16_224", "--adb", "/bin/true"], "--target android"),
    # an adb that lists no device: the phone is looked for before the model is built
    (["--model", "deit_tiny_patch16_224", "--target", "android", "--adb", "/bin/true", "--runner", "RUNNER"],
     "no Android device attached"),
    (["--model", "deit_tiny_patch16_224", "--target", "android", "--adb", "/bin/true", "--runner", "RUNNER",
      "--serial", "R5CT"], "device 'R5CT' is not attached"),
    (["--model", "deit_tiny_patch16_224", "--target", "android", "--adb", "/bin/true", "--runner", "/no/runner"],
     "/no/runner"),
])
def test_bad_input_is_one_line(argv, names, capsys, cache_root, tmp_path):
    runner = tmp_path / "runner"  # an AArch64 ELF header: passes the runner check
    runner.write_bytes(b"\x7fELF\x02" + bytes(13) + (183).to_bytes(2, "little"))
    argv = [str(runner) if a == "RUNNER" else a for a in argv]
    rc, out, err = _run(["profile", "--quiet", *argv], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 1 and len(lines) == 1, err
    assert names in lines[0] and "Traceback" not in err


def test_out_naming_a_folder_is_refused(tmp_path, capsys, cache_root):
    rc, _, err = _run(["profile", "--quiet", "--model", "deit_tiny_patch16_224", "--out", str(tmp_path)], capsys)
    assert rc == 1 and "is a folder" in err


def test_profile_command_writes_the_table_and_caches_it(tmp_path, capsys, cache_root, one_thread):
    from lraqvit_deploy import create_model

    out = tmp_path / "tiny.json"
    rc, stdout, err = _run(["profile", "--quiet", "--model", "deit_tiny_patch16_224", "--img-size", "32",
                            "--forms", "fp32", "--rank-fractions", "0.5", "--rounds", "1", "--iterations", "1",
                            "--warmup", "0", "--out", str(out)], capsys)
    assert rc == 0, err
    written = CostTable.load(out)
    shapes = list(model_shapes(create_model("deit_tiny_patch16_224", weights="random", img_size=32)))
    assert written.covers(shapes, ("fp32",)) and len(written.shapes) == 4
    assert written.meta["model"] == "deit_tiny_patch16_224" and written.meta["input_size"] == [3, 32, 32]
    assert written.shapes["192x768@5"]["layers"][0] == "blocks.0.mlp.fc1"
    hit = cached_table("host", 1, shapes, forms=("fp32",))
    assert hit is not None and hit.to_dict() == written.to_dict()
    assert cached_table("host", 1, shapes) is None  # the w8/w4 forms were not timed
    assert "192x768@5" in stdout and str(out) in stdout
    # the whole dense model in the profiled form, and the remainder outside the Linears (rank_alloc.latency)
    assert set(written.whole) == {"fp32"} and written.whole["fp32"]["median_ms"] > 0
    assert written.rest_ms("fp32") is not None and written.rest_ms("w8") is None and "whole model: fp32" in stdout


def test_a_busy_host_is_noted():
    import os

    from lraqvit_deploy.measure.costs import busy_note

    t = _synthetic(4.0, {32: 1.0})
    t.meta["load_avg"] = {"before": [0.1, 0.1, 0.1], "after": [0.2, 0.1, 0.1]}
    assert busy_note(t) is None
    t.meta["load_avg"]["after"] = [(os.cpu_count() or 1) + 1.5, 1.0, 1.0]
    assert "load average" in busy_note(t) and "idle machine" in busy_note(t)
