"""A latency budget (issue 26, item 2): MLoRQ's ILP with a latency row, each candidate priced by a cost table.

Hand-made candidates and hand-made cost tables (built from the dicts `CostTable.from_dict` reads), where
the optimum and every predicted number are known exactly; one end-to-end run on deit_tiny at 32 px with
a hand-made table of its shapes (compress -> build manifest -> bench).
"""
from __future__ import annotations

import json

import pytest
import torch.nn as nn

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.measure.costs import FORMS, TABLE_FORMAT, CostTable, LinearShape, rank_grid
from lraqvit_deploy.options import OptionError
from lraqvit_deploy.rank_alloc.latency import (InfeasibleLatency, LatencyModel, choice_ms, latency_plan,
                                               pareto_multi, price, resolve_table, table_form)
from lraqvit_deploy.rank_alloc.mlorq import Candidate, InfeasibleBudget, ResourceRow, solve_ilp
from lraqvit_deploy.rank_alloc.plan import LayerChoice
from lraqvit_deploy.recipe import AllocationConfig

COEF = {"fp32": 1.0, "w8": 0.5, "w4": 0.45, "w4g32": 0.48}  # ms per 1e6 multiply-adds of each form
DENSE_FIXED, PAIR_FIXED, REST = 0.01, 0.02, 0.01


def dense_ms(s: LinearShape, form: str) -> float:
    return COEF[form] * s.in_f * s.out_f * s.tokens / 1e6 + DENSE_FIXED


def pair_ms(s: LinearShape, form: str, r: int) -> float:
    return COEF[form] * r * (s.in_f + s.out_f) * s.tokens / 1e6 + PAIR_FIXED


def _stat(ms: float):
    return {"median_ms": ms, "min_ms": ms, "max_ms": ms, "best_ms": ms * 0.9, "fp32_ratio": None}


def make_table(layers, forms=FORMS, whole: bool = True, ranks=None, threads: int = 1, cpu=None, versions=None):
    """A cost table of `layers` ({LinearShape: [names]}) priced by `dense_ms` / `pair_ms`; `whole`: with
    whole-model timings (REST ms outside the Linears)."""
    shapes = {}
    for s, names in layers.items():
        fs = {}
        for f in forms:
            rs = ranks or rank_grid(s, f)
            fs[f] = {"dense": _stat(dense_ms(s, f)), "ranks": list(rs),
                     "pairs": {str(r): _stat(pair_ms(s, f, r)) for r in rs}}
        shapes[s.key] = {"in": s.in_f, "out": s.out_f, "tokens": s.tokens, "break_even_rank": s.break_even_rank,
                         "layers": list(names), "forms": fs}
    d = {"format": TABLE_FORMAT, "target": "host", "threads": threads, "cpu": cpu or {"model_name": "Test CPU"},
         "versions": versions or {"torch": "x", "executorch": "y"}, "shapes": shapes, "meta": {"model": "tiny"}}
    if whole:
        d["whole_ms"] = {f: _stat(sum(len(n) * dense_ms(s, f) for s, n in layers.items()) + REST)
                         for f in ("fp32", "w8") if f in forms}
    return CostTable.from_dict(json.loads(json.dumps(d)))


# ---- the ILP with resource rows ---------------------------------------------------------------------------------
def C(loss, bits, ms, rank=None):
    return Candidate(LayerChoice(rank=rank, w_bits=8), loss, bits, ms)


CANDS = {"a": [C(0, 100, 10), C(1, 50, 6), C(3.5, 20, 3)],
         "b": [C(0, 100, 8), C(2, 40, 4), C(5, 10, 2), C(9, 5, 9)]}
LAT = lambda budget: ResourceRow("latency", lambda c: c.ms, budget, "ms")  # noqa: E731


def _pick(chosen):
    return tuple((chosen[n].loss, chosen[n].bits, chosen[n].ms) for n in ("a", "b"))


def test_memory_only_results_are_unchanged():
    assert _pick(solve_ilp(CANDS, 150)) == ((1, 50, 6), (0, 100, 8))  # the old single-row ILP's optimum
    with pytest.raises(InfeasibleBudget, match="raise --memory-budget-mb"):
        solve_ilp(CANDS, 24)


def test_latency_row_binds_and_gives_the_known_optimum():
    assert _pick(solve_ilp(CANDS, None)) == ((0, 100, 10), (0, 100, 8))  # no row: every layer at its best
    assert _pick(solve_ilp(CANDS, None, rows=[LAT(12)])) == ((1, 50, 6), (2, 40, 4))  # loss 3 at 10 ms
    both = solve_ilp(CANDS, 80, rows=[LAT(12)])  # the memory row binds too: 60 bits, 7 ms, loss 5.5
    assert _pick(both) == ((3.5, 20, 3), (2, 40, 4))
    fastest = solve_ilp(CANDS, None, objective=lambda c: c.ms)
    assert sum(c.ms for c in fastest.values()) == 5


def test_rows_infeasible_alone_or_together():
    with pytest.raises(InfeasibleBudget, match="5 ms of latency, above its budget of 4.5 ms"):
        solve_ilp(CANDS, None, rows=[LAT(4.5)])
    with pytest.raises(InfeasibleBudget, match="no allocation meets the memory and the latency budgets at once"):
        solve_ilp(CANDS, 27, rows=[LAT(6)])  # each row alone is feasible


def test_pareto_multi_keeps_only_undominated_candidates():
    cands = [C(1, 50, 6), C(1, 60, 6), C(2, 50, 7), C(0.5, 70, 5), C(3, 10, 9)]
    assert {(c.loss, c.bits, c.ms) for c in pareto_multi(cands, size=True)} == {(1, 50, 6), (0.5, 70, 5), (3, 10, 9)}
    assert {(c.loss, c.ms) for c in pareto_multi(cands, size=False)} == {(0.5, 5)}


# ---- candidate latencies from a table ---------------------------------------------------------------------------
S1, S2 = LinearShape(64, 64, 5), LinearShape(64, 128, 5)
LAYERS = {S1: ["l0"], S2: ["l1"]}
RANKS = [8, 16, 32]


def test_table_forms_of_choices():
    assert table_form(LayerChoice()) == "fp32"
    assert table_form(LayerChoice(w_bits=8)) == "w8"
    assert table_form(LayerChoice(w_bits=4, group=32)) == "w4g32"
    assert table_form(LayerChoice(rank=8, factor_bits=(4, 4))) == "w4"
    assert table_form(LayerChoice(rank=32, factor_bits=(4, 4), factor_groups=(32, 32))) == "w4g32"
    assert table_form(LayerChoice(rank=8, factor_bits=(8, 4))) is None  # a mixed pair: the table has none
    assert table_form(LayerChoice(rank=32, factor_bits=(4, 4), factor_groups=(None, 32))) is None


def test_candidate_latency_comes_from_the_table():
    t = make_table(LAYERS, ranks=RANKS)
    assert choice_ms(t, LayerChoice(w_bits=8), S1) == pytest.approx(dense_ms(S1, "w8"))
    assert choice_ms(t, LayerChoice(), S2) == pytest.approx(dense_ms(S2, "fp32"))
    assert choice_ms(t, LayerChoice(rank=16, factor_bits=(8, 8)), S2) == pytest.approx(pair_ms(S2, "w8", 16))
    # rank 12: halfway between the grid's 8 and 16 (the synthetic cost is linear in r, so exact)
    assert choice_ms(t, LayerChoice(rank=12, factor_bits=(4, 4)), S1) == pytest.approx(pair_ms(S1, "w4", 12))
    assert choice_ms(t, LayerChoice(rank=8, factor_bits=(8, 4)), S1) is None
    assert choice_ms(t, LayerChoice(w_bits=4, group=64), S1) is None  # a form the table did not time
    assert choice_ms(t, LayerChoice(w_bits=8), LinearShape(32, 32, 5)) is None  # a shape it lacks


def test_w4g64_and_w4g128_are_priced_when_the_table_timed_them(monkeypatch):
    from lraqvit_deploy.cli.main import build_parser
    from lraqvit_deploy.measure.costs import EXTRA_FORMS

    monkeypatch.setitem(COEF, "w4g64", 0.46)
    monkeypatch.setitem(COEF, "w4g128", 0.47)
    s = LinearShape(256, 512, 5)
    t = make_table({s: ["l0"]}, forms=FORMS + EXTRA_FORMS)
    assert choice_ms(t, LayerChoice(w_bits=4, group=64), s) == pytest.approx(dense_ms(s, "w4g64"))
    r = rank_grid(s, "w4g128")[0]
    assert r % 128 == 0 and choice_ms(t, LayerChoice(rank=r, factor_bits=(4, 4), factor_groups=(128, 128)), s) == \
        pytest.approx(pair_ms(s, "w4g128", r))
    args = build_parser().parse_args(["profile", "--model", "m", "--forms", "fp32", "w8", "w4g64", "w4g128"])
    assert args.forms == ["fp32", "w8", "w4g64", "w4g128"]


def test_rest_is_whole_less_the_dense_cells_and_optional():
    t = make_table({S1: ["l0", "l2"], S2: ["l1"]}, ranks=RANKS)
    assert t.rest_ms("fp32") == pytest.approx(REST) and t.rest_ms("w8") == pytest.approx(REST)
    assert t.rest_ms("w4") is None  # no whole-model timing in w4
    assert CostTable.from_dict(t.to_dict()).whole == t.whole  # whole_ms survives the JSON
    old = make_table(LAYERS, ranks=RANKS, whole=False)
    assert old.rest_ms("fp32") is None and "whole_ms" not in old.to_dict()


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.l0, self.l1 = nn.Linear(64, 64), nn.Linear(64, 128)


def _candidates():
    """Per layer: dense w8 (loss 0.01), w4 (0.05), a rank-8 w8 pair (0.3), a rank-8 mixed pair (0.2, unpriced)."""
    def cands():
        return [Candidate(LayerChoice(w_bits=8), 0.01, 8 * 5000), Candidate(LayerChoice(w_bits=4), 0.05, 8 * 2600),
                Candidate(LayerChoice(rank=8, factor_bits=(8, 8)), 0.3, 8 * 1500),
                Candidate(LayerChoice(rank=8, factor_bits=(8, 4)), 0.2, 8 * 1200)]
    return {"l0": cands(), "l1": cands()}


def _plan(table, **kw):
    model = Two()
    lat = LatencyModel(table, {"l0": S1, "l1": S2}, "hand-made")
    linears = {"l0": model.l0, "l1": model.l1}
    return latency_plan(model, linears, None, "android", lat, progress=False, candidates=_candidates(), **kw), lat


def test_mixed_pairs_are_left_out_while_a_latency_budget_is_active():
    lat = LatencyModel(make_table(LAYERS, ranks=RANKS), {"l0": S1, "l1": S2}, "hand-made")
    priced = price(_candidates(), lat)
    assert [c.choice.label for c in priced["l0"]] == ["w8", "w4", "r8:w8/w8"]
    assert priced["l1"][2].ms == pytest.approx(pair_ms(S2, "w8", 8))


def test_latency_plan_predicts_the_whole_program_and_the_budget_binds():
    table = make_table(LAYERS, ranks=RANKS)
    w8 = dense_ms(S1, "w8") + dense_ms(S2, "w8") + REST
    (plan, s), lat = _plan(table, latency_budget_ms=w8 + 1e-6)  # all-w8 fits: the least loss
    assert {c.label for c in plan.values()} == {"w8"}
    assert s["predicted_latency_ms"] == pytest.approx(w8, abs=1e-3) and s["rest_known"] and s["rest_ms"] == REST
    assert s["cost_table"] == "hand-made" and s["threads"] == 1 and "Test CPU" in s["cpu"]
    # a tighter budget: l1 (the larger layer) goes to its pair, l0 stays w8 (loss 0.31 < every other choice)
    tight = dense_ms(S1, "w8") + pair_ms(S2, "w8", 8) + REST + 1e-6
    (plan, s), _ = _plan(table, latency_budget_ms=tight)
    assert plan["l0"].label == "w8" and plan["l1"].label == "r8:w8/w8"
    assert s["predicted_latency_ms"] <= tight + 1e-3
    assert s["predicted_latency_ms"] == pytest.approx(lat.predict(plan)["predicted_latency_ms"])


def test_speedup_is_against_the_dense_fp32_prediction_on_the_same_table():
    table = make_table(LAYERS, ranks=RANKS)
    dense = dense_ms(S1, "fp32") + dense_ms(S2, "fp32") + REST
    (plan, s), _ = _plan(table, speedup=1.5)
    assert s["dense_fp32_ms"] == pytest.approx(dense, abs=1e-3)
    assert s["latency_budget_ms"] == pytest.approx(dense / 1.5, abs=1e-3)
    assert s["predicted_latency_ms"] <= dense / 1.5 + 1e-3


def test_infeasible_budget_is_one_line_naming_the_fastest_latency():
    table = make_table(LAYERS, ranks=RANKS)
    fastest = dense_ms(S1, "w4") + pair_ms(S2, "w8", 8) + REST  # every layer in its fastest candidate
    with pytest.raises(InfeasibleLatency) as e:
        _plan(table, latency_budget_ms=0.03)
    msg = str(e.value)
    assert "\n" not in msg and f"{fastest:.3f} ms" in msg and "--latency-budget-ms 0.03" in msg
    assert e.value.fastest_ms == pytest.approx(fastest)
    with pytest.raises(InfeasibleLatency, match=r"give at most --speedup"):
        _plan(table, speedup=100)


def test_with_a_size_budget_both_rows_bind_and_a_pair_no_plan_meets_is_one_line():
    from lraqvit_deploy.quant.forms import program_bytes

    table = make_table(LAYERS, ranks=RANKS)
    m = Two()
    fixed = program_bytes(m) - 4 * (64 * 64 + 64 * 128)

    def size_for(bits):  # the size budget whose memory row is `bits` (the planner keeps a 1 % margin)
        return (bits / 8 + fixed) / 0.99 / 1e6

    lat_w4_pair = dense_ms(S1, "w4") + pair_ms(S2, "w8", 8) + REST  # the fastest plan: 20800 + 12000 bits
    (plan, s), _ = _plan(table, latency_budget_ms=lat_w4_pair + 1e-6, size_budget_mb=size_for(40000))
    assert (plan["l0"].label, plan["l1"].label) == ("w4", "r8:w8/w8") and s["size_budget_mb"] == size_for(40000)
    # within 30000 bits only the two pairs fit (24000 bits), at 0.0564 ms: above 0.054, though each row alone is met
    with pytest.raises(InfeasibleLatency) as e:
        _plan(table, latency_budget_ms=0.054, size_budget_mb=size_for(30000))
    both = pair_ms(S1, "w8", 8) + pair_ms(S2, "w8", 8) + REST
    assert "\n" not in str(e.value) and f"is predicted at {both:.3f} ms" in str(e.value)
    assert "--latency-budget-ms 0.054 with --size-budget-mb" in str(e.value)


def test_older_table_predicts_the_linears_only_and_says_so():
    table = make_table(LAYERS, ranks=RANKS, whole=False)
    (plan, s), _ = _plan(table, speedup=1.2)
    assert s["rest_known"] is False and s["rest_ms"] is None and "no whole-model timing" in s["note"]
    assert s["dense_fp32_ms"] == pytest.approx(dense_ms(S1, "fp32") + dense_ms(S2, "fp32"), abs=1e-3)


# ---- the config and the table it finds ----------------------------------------------------------------------------
@pytest.mark.parametrize("kw, words, flag", [
    ({"speedup": 0, "target": "android"}, "speedup = 0.0: must be > 0", "--speedup 0.0"),
    ({"speedup": -2.0, "target": "android"}, "speedup = -2.0: must be > 0", "--speedup -2.0"),
    ({"latency_budget_ms": 0.0, "target": "android"}, "latency_budget_ms = 0.0: must be > 0",
     "--latency-budget-ms 0.0"),
    ({"speedup": 2.0}, "speedup is the latency of a built program: give target = android",
     "--speedup is the latency of a built program: give --target android"),
    ({"latency_budget_ms": 40.0}, "give target = android", "give --target android"),
    ({"speedup": 2.0, "target": "jetson"}, "target = 'jetson' is priced by the Jetson's own cost table: give cost_table",
     "--target 'jetson' is priced by the Jetson's own cost table: give --cost-table"),
    ({"speedup": 2.0, "latency_budget_ms": 3.0, "target": "android"}, "not both", "--latency-budget-ms"),
    ({"cost_table": "t.json"}, "cost_table prices a latency budget", "--cost-table prices a latency budget"),
    ({"speedup": 2.0, "target": "android", "method": "energy"}, "method = 'energy'", "--rank-alloc 'energy'"),
    ({"speedup": 2.0, "target": "android", "memory_budget_mb": 3.0}, "drop memory_budget_mb",
     "drop --memory-budget-mb"),
    ({"speedup": 2.0, "target": "android", "latency_threads": 0}, "latency_threads = 0: must be >= 1",
     "--latency-threads 0"),
])
def test_config_validation_names_the_field_and_the_flag(kw, words, flag):
    from lraqvit_deploy.cli.args import flag_error

    with pytest.raises(OptionError) as e:
        AllocationConfig(**kw)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert flag in flag_error(e.value)


def test_a_latency_knob_implies_mlorq_alone_or_with_a_size_budget():
    a = AllocationConfig(speedup=2.0, target="android")
    assert a.method == "mlorq" and a.has_latency_budget and a.latency_threads == 1
    b = AllocationConfig(latency_budget_ms=40, size_budget_mb=10.8, target="android", cost_table="t.json")
    assert b.method == "mlorq" and b.cost_table == "t.json"
    assert not AllocationConfig().has_latency_budget
    assert AllocationConfig.from_dict(b.to_dict()) == b


def test_missing_table_is_one_line_saying_how_to_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("LRAQVIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DeployError) as e:
        resolve_table(None, 2, [S1], "deit_tiny_patch16_224", 32)
    msg = str(e.value)
    assert "\n" not in msg and "no cost table of this host at 2 thread(s)" in msg
    assert "`deploy profile --target host --model deit_tiny_patch16_224 --img-size 32 --threads 2` first" in msg
    with pytest.raises(DeployError, match="--cost-table .*nope.json: no such file"):
        resolve_table(str(tmp_path / "nope.json"), 1, [S1], "m")


def test_given_and_cached_tables_are_found(tmp_path, monkeypatch):
    from lraqvit_deploy.measure.costs import cache_path
    from lraqvit_deploy.measure.host import lscpu, versions

    monkeypatch.setenv("LRAQVIT_CACHE", str(tmp_path / "cache"))
    table = make_table(LAYERS, ranks=RANKS, cpu=lscpu(), versions=versions(("torch", "executorch")))
    path = table.save(tmp_path / "t.json")
    got, source = resolve_table(str(path), 1, [S1, S2], "m")
    assert source == str(path) and got.shapes == table.shapes and got.whole == table.whole
    with pytest.raises(DeployError, match="no timings for 32x32@5"):
        resolve_table(str(path), 1, [S1, LinearShape(32, 32, 5)], "m")
    table.save(cache_path("host", 1, [S1, S2], FORMS, table.cpu, table.versions))
    got, source = resolve_table(None, 1, [S1, S2], "m")
    assert source.startswith("cache: ") and got.shapes == table.shapes
    with pytest.raises(DeployError, match="at 2 thread"):  # another thread count: never that table
        resolve_table(None, 2, [S1, S2], "m")


# ---- the command line ---------------------------------------------------------------------------------------------
# the flags' one-line errors: tests/lraqvit_deploy/cli/test_recipe_flags.py::test_compress_names_the_flag


def test_latency_flags_reach_the_recipe_of_compress_and_build():
    from lraqvit_deploy.cli.compress import recipe_from_args
    from lraqvit_deploy.cli.main import build_parser

    p = build_parser()
    r = recipe_from_args(p.parse_args(["compress", "--out", "o", "--speedup", "2", "--target", "android",
                                       "--cost-table", "t.json", "--latency-threads", "2"]))
    assert (r.allocation.speedup, r.allocation.target, r.allocation.cost_table) == (2.0, "android", "t.json")
    assert r.allocation.latency_threads == 2 and r.allocation.method == "mlorq"
    b = recipe_from_args(p.parse_args(["build", "--target", "android", "--out", "o", "--latency-budget-ms", "30",
                                       "--size-budget-mb", "5"]))
    assert (b.allocation.latency_budget_ms, b.allocation.size_budget_mb, b.allocation.target) == (30.0, 5.0, "android")


def test_bench_prints_measured_beside_predicted():
    from lraqvit_deploy.benchmark import BenchResult
    from lraqvit_deploy.cli.bench import predicted_line

    r = BenchResult("host", "p.pte", "cpu", 5, 1, 1, 11.0, 12.0, 10.0, 13.0, 11.0)
    assert predicted_line(r) == ""
    r.extra["predicted"] = {"predicted_latency_ms": 10.0, "cost_table": "t.json", "threads": 1, "rest_known": True}
    line = predicted_line(r)
    assert "predicted" in line and "10 ms" in line and "11 ms" in line and "1.100" in line and "t.json" in line
    r.extra["predicted"]["threads"] = 2
    assert "timed at 2 thread(s)" in predicted_line(r)


# ---- end to end: deit_tiny at 32 px, compress --speedup -> build manifest -> bench ------------------------------
TINY = ["--model", "deit_tiny_patch16_224", "--weights", "random", "--img-size", "32", "--num-classes", "10"]


def test_compress_speedup_build_and_bench_carry_the_prediction(tmp_path, capsys):
    pytest.importorskip("executorch.runtime")
    from lraqvit_deploy import build, create_model, load_artifact
    from lraqvit_deploy.backends.executorch.backend import AndroidBuildOptions
    from lraqvit_deploy.cli.main import main
    from lraqvit_deploy.measure.costs import model_shapes

    model = create_model("deit_tiny_patch16_224", "random", img_size=32, num_classes=10, progress=False)
    table = make_table(model_shapes(model))
    path = table.save(tmp_path / "deit_t32.json")
    common = [*TINY, "--quiet", "--target", "android", "--cost-table", str(path), "--alloc-calib-data",
              "fashion-mnist:train", "--alloc-calib-images", "8"]
    rc = main(["compress", *common, "--speedup", "1000", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    line = err.splitlines()[-1]  # (a library's import-time warning may come before it)
    assert rc == 1 and line.startswith("deploy compress: error: --speedup 1000") and "Traceback" not in err
    assert "give at most --speedup" in line and "the fastest plan of this model is predicted at" in line
    assert not (tmp_path / "x").exists()

    rc = main(["compress", *common, "--speedup", "2.5", "--out", str(tmp_path / "c"), "--json",
               str(tmp_path / "r.json")])
    capsys.readouterr()
    assert rc == 0
    report = json.loads((tmp_path / "r.json").read_text())
    dense = sum(len(n) * dense_ms(s, "fp32") for s, n in model_shapes(model).items()) + REST
    assert report["predicted_dense_fp32_ms"] == pytest.approx(dense, rel=1e-3)
    assert report["latency_budget_ms"] == pytest.approx(dense / 2.5, rel=1e-3)
    assert 0 < report["predicted_latency_ms"] <= dense / 2.5 + 1e-3
    assert report["cost_table"] == str(path) and report["cost_table_threads"] == 1 and report["speedup"] == 2.5
    assert report["planned_size_mb"] > 0 and report["target"] == "android" and report["planned_loss"] > 0
    # the compressed model read back layer by layer is the plan, and predicts what the planner predicted
    lat = LatencyModel.for_model(table, model, str(path))
    assert lat.predict_model(load_artifact(tmp_path / "c"))["predicted_latency_ms"] == \
        pytest.approx(report["predicted_latency_ms"], abs=2e-3)

    m = build(load_artifact(tmp_path / "c"), tmp_path / "b", AndroidBuildOptions(arm_verify=False, verify=False,
                                                                                  progress=False)).manifest
    assert m["predicted_latency_ms"] == report["predicted_latency_ms"]
    assert m["latency_prediction"]["cost_table"] == str(path) and m["latency_budget_ms"] == report["latency_budget_ms"]

    rc = main(["bench", "--target", "host", str(tmp_path / "b"), "--iterations", "3", "--warmup", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "predicted" in out and "measured median" in out, out
