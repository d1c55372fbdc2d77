"""The latency budget against reality: predicted vs measured whole-program latency, and what a latency plan buys.

Issue 26, items 3 and 4. For each model (default DeiT-T/S/B at 224 px, random weights, 10 classes), on this host:

  1. a cost table per `--threads` count (`backends.executorch.cost_profile.profile_costs`: every encoder-Linear shape, dense and
     rank-r pairs in fp32 / w8 / w4 / w4g32, and the whole dense model); a table this host cached is reused
     unless `--reprofile`;
  2. the programs, compressed and built by the library as `deploy compress` / `deploy build --target android`
     make them (host verification on 16 images, Arm check off), each step reused from `--work` when done:
        fp32       dense FP32
        pt2e-int8  dense, stock PT2E INT8
        rb-fp32    RB-LRA, uniform ranks at -45 % parameters, FP32 (no distillation: random weights)
        rb-int8    the same + WADS INT8
        lat-eq     a latency plan (MLoRQ priced by the 1-thread table) at rb-int8's predicted latency
        lat-2x     a latency plan at half of pt2e-int8's predicted latency (the issue's goal, DeiT-B)
  3. each program predicted from each thread count's table (`LatencyModel.predict_model`; pt2e-int8 as every
     encoder Linear in w8) and timed at that thread count in interleaved rounds (`table.bench_rounds`), with
     the planner's error of each (`mlorq.plan_loss`: E‖X(W − Ŵ)ᵀ‖² / E‖XWᵀ‖² per layer, summed, on the
     calibration images; a latency plan's is the one its integer program minimised).

    python benchmarks/latency_budget.py --out benchmarks/results/latency_budget      # the committed run
    python benchmarks/latency_budget.py --models deit_tiny_patch16_224 --img-size 64 --rounds 2 --out /tmp/lb
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Dict, List

import _result_file

HERE = Path(__file__).resolve().parent
SCHEMA = "lraqvit-deploy/latency-budget/1"
MODELS = ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")
PROGRAMS = {"fp32": "dense FP32", "pt2e-int8": "dense, stock PT2E INT8", "rb-fp32": "RB-LRA -45 % FP32 (uniform)",
            "rb-int8": "RB-LRA -45 % + WADS INT8 (uniform)", "lat-eq": "latency plan at rb-int8's predicted ms",
            "lat-2x": "latency plan at 1/2 of stock INT8's predicted ms"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), help="timm names (default DeiT-T/S/B)")
    p.add_argument("--img-size", type=int, default=224, help="input size (default 224)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds per thread count (default 5)")
    p.add_argument("--iterations", type=int, default=20, help="timed runs per program per round (default 20)")
    p.add_argument("--profile-rounds", type=int, default=3, help="rounds of the cost-table profile (default 3)")
    p.add_argument("--calib-images", type=int, default=32, help="calibration images (default 32)")
    p.add_argument("--reprofile", action="store_true", help="time the cost tables again even if this host cached them")
    p.add_argument("--work", type=Path, default=Path("/tmp/latency_budget"), help="artifacts (reused when done)")
    _result_file.add_out(p, HERE / "results" / "latency_budget")
    return p.parse_args(argv)


def seeded_model(name: str, img_size: int):
    import torch

    from lraqvit_deploy import create_model

    torch.manual_seed(0)  # random weights: the same dense model for every program
    return create_model(name, weights="random", num_classes=10, img_size=img_size, progress=False)


def cost_tables(name: str, args, work: Path) -> Dict[int, Path]:
    """{threads: table path}: this host's cached table, or a fresh profile (run alone: it times)."""
    from lraqvit_deploy.backends.executorch.cost_profile import profile_costs
    from lraqvit_deploy.measure.costs import FORMS, cached_table, model_shapes

    model, out = seeded_model(name, args.img_size), {}
    shapes = list(model_shapes(model))
    for t in args.threads:
        path = work / f"costs-{t}t.json"
        cached = None if args.reprofile else cached_table("host", t, shapes, FORMS)
        if cached is not None and cached.whole:
            cached.save(path)
        else:
            print(f"[{name}] profiling at {t} thread(s) ...", flush=True)
            profile_costs(model, threads=t, rounds=args.profile_rounds, out=path, progress=False, model_name=name,
                          cell_dir=work / "cells")  # the cells are lowered once, for every thread count
        out[t] = path
    return out


def make_programs(name: str, args, work: Path, tables: Dict[int, Path]) -> Dict[str, Dict[str, Any]]:
    """Compress and build every program (reusing finished ones); returns {id: record} with the build folder."""
    from lraqvit_deploy import AndroidBuildOptions, LowRankConfig, Recipe, load_artifact, quant_config
    from lraqvit_deploy.data_sources import calibration_images
    from lraqvit_deploy.pipeline import compress
    from lraqvit_deploy.rank_alloc.latency import InfeasibleLatency, latency_model
    from lraqvit_deploy.rank_alloc.plan import LayerChoice
    from lraqvit_deploy.recipe import AllocationConfig
    from lraqvit_deploy.targets import build

    dense = seeded_model(name, args.img_size)
    images = calibration_images(dense, args.calib_images, "fashion-mnist:train", seed=0, why="calibration")
    lat = latency_model(dense, str(tables[min(tables)]))
    rec: Dict[str, Dict[str, Any]] = {}

    def made(pid: str, recipe=None, precision: str = "q8") -> None:
        art, out = work / f"{pid}.artifact", work / f"{pid}.pte"
        t0 = time.perf_counter()
        if not (out / "manifest.json").is_file():
            model = seeded_model(name, args.img_size)
            if recipe is not None:
                if not (art / "manifest.json").is_file():
                    compress(model, recipe, calib_data=images, alloc_data=images, evaluate=False, out=art,
                             progress=False)
                model = load_artifact(art)
            build(model, out, AndroidBuildOptions(precision=precision, verify_images=16, arm_verify=False,
                                                  progress=False), data="fashion-mnist:test", data_limit=16)
            gc.collect()
        manifest = json.loads((out / "manifest.json").read_text())
        rec[pid] = {"label": PROGRAMS[pid], "pte": str(out), "size_mb": manifest.get("size_mb"),
                    "artifact": str(art) if recipe is not None else None, "seconds": round(time.perf_counter() - t0, 1)}

    made("fp32", precision="fp32")
    made("pt2e-int8")
    uniform = LowRankConfig("rb-lra", param_reduction=0.45, svd="activation")
    made("rb-fp32", Recipe(low_rank=uniform), precision="fp32")
    made("rb-int8", Recipe(low_rank=uniform, quant=quant_config("wads", progress=False),
                           quant_calib_images=args.calib_images))
    budgets = {"lat-eq": lat.predict_model(load_artifact(work / "rb-int8.artifact"))["predicted_latency_ms"],
               "lat-2x": lat.predict({n: LayerChoice(w_bits=8) for n in lat.shapes})["predicted_latency_ms"] / 2}
    for pid, budget in budgets.items():
        alloc = dict(target="android", cost_table=str(tables[min(tables)]), calib_images=args.calib_images)
        kept = work / f"{pid}.budget.json"  # the budget the program was planned for (an infeasible one is raised)
        if kept.is_file() and (work / f"{pid}.pte" / "manifest.json").is_file():
            made(pid, "kept")  # built: its artifact is read back, nothing is planned again
            rec[pid].update(json.loads(kept.read_text()))
            continue
        note = None
        try:
            recipe = Recipe(allocation=AllocationConfig(latency_budget_ms=round(budget, 3), **alloc),
                            quant_calib_images=args.calib_images)
            made(pid, recipe)
        except InfeasibleLatency as e:  # below the fastest plan: plan that one, and say so
            note = f"{budget:.3f} ms is infeasible: {e}"
            budget = e.fastest_ms * 1.001
            made(pid, Recipe(allocation=AllocationConfig(latency_budget_ms=round(budget, 3), **alloc),
                             quant_calib_images=args.calib_images))
        rec[pid].update(budget_ms=round(budget, 3), note=note)
        kept.write_text(json.dumps({"budget_ms": rec[pid]["budget_ms"], "note": note}))
    return rec


def measure(name: str, args, work: Path, tables: Dict[int, Path], rec: Dict[str, Dict[str, Any]]) -> None:
    """Predict each program from each table, time it at that thread count, and score its planner error."""
    from lraqvit_deploy import HostBenchOptions, load_artifact
    from lraqvit_deploy.data_sources import calibration_images
    from lraqvit_deploy.lowrank.activations import collect_stats
    from lraqvit_deploy.rank_alloc.latency import latency_model
    from lraqvit_deploy.rank_alloc.mlorq import plan_loss
    from lraqvit_deploy.rank_alloc.plan import LayerChoice
    from lraqvit_deploy.table import bench_rounds
    from lraqvit_deploy.vit_layout import encoder_linears

    dense = seeded_model(name, args.img_size)
    images = calibration_images(dense, args.calib_images, "fashion-mnist:train", seed=0, why="calibration")
    linears = encoder_linears(dense)
    stats = collect_stats(dense, images, linears, progress=False)
    lats = {t: latency_model(dense, str(p)) for t, p in tables.items()}
    any_lat = lats[min(lats)]
    for pid, r in rec.items():
        model = dense if r["artifact"] is None else load_artifact(r["artifact"])
        plan = {n: LayerChoice(w_bits=8) for n in any_lat.shapes} if pid == "pt2e-int8" else any_lat.plan_of(model)
        r["planner_error"] = round(sum(plan_loss(linears, stats, plan).values()), 6)
        r["forms"] = sorted({c.label if c.rank is None else "r:" + c.label.split(":", 1)[1] for c in plan.values()})
        r["predicted"] = {str(t): lat.predict(plan)["predicted_latency_ms"] for t, lat in lats.items()}
        del model
    for t in args.threads:
        res = bench_rounds({pid: r["pte"] for pid, r in rec.items()},
                           HostBenchOptions(iterations=args.iterations, warmup=3, threads=t, progress=False),
                           args.rounds, baseline="pt2e-int8")
        for pid, r in rec.items():
            s = res["summary"][pid]
            r.setdefault("measured", {})[str(t)] = {k: s[k] for k in ("median_ms", "min_ms", "max_ms", "ratio_median",
                                                                  "ratio_min", "ratio_max")}
            r.setdefault("error", {})[str(t)] = round(r["predicted"][str(t)] / s["median_ms"] - 1, 4)


def break_even(tables: Dict[int, Path]) -> List[Dict[str, Any]]:
    """Per shape and form: the parameter break-even rank and the measured one at each thread count."""
    from lraqvit_deploy.measure.costs import CostTable

    loaded = {t: CostTable.load(p) for t, p in tables.items()}
    first = loaded[min(loaded)]
    rows = []
    for key, entry in first.shapes.items():
        for form in entry["forms"]:
            rows.append({"shape": key, "form": form, "param_r": round(entry["break_even_rank"], 1),
                         "grid": entry["forms"][form]["ranks"],
                         "measured": {str(t): tb.break_even_rank_measured(key, form) for t, tb in loaded.items()}})
    return rows


def markdown(res: Dict[str, Any]) -> str:
    threads = res["threads"]
    lines = ["# Latency budget: predicted vs measured (issue 26)\n", f"- Command: `{res['command']}`; {res['date']}",
             f"- CPU: {_result_file.cpu_line(res['cpu'])}",
             f"- Latency: {res['rounds']} interleaved rounds x (3 warm-up + {res['iterations']} runs) per thread count; "
             "error = predicted / measured median - 1; x stock = median over rounds of the per-round ratio to "
             "pt2e-int8.", "- Random weights (224 px unless stated): sizes, latency and the planner's error, "
                           "not accuracy.", ""]
    for m in res["models"]:
        lines += [f"## {m['model']} ({m['img_size']} px)", "",
                  "| program | forms | .pte MB | planner error | " + " | ".join(
                      f"{t}t predicted ms | {t}t measured ms | {t}t error | {t}t x stock INT8" for t in threads) + " |",
                  "|---|---|---:|---:|" + "---:|" * (4 * len(threads))]
        for pid, r in m["programs"].items():
            cells = []
            for t in map(str, threads):
                meas, err, pred = r["measured"][t], r["error"][t], r["predicted"][t]
                cells += [f"{pred:.2f}", f"{meas['median_ms']:.2f} [{meas['min_ms']:.2f}-{meas['max_ms']:.2f}]",
                          f"{100 * err:+.1f} %", f"{meas['ratio_median']:.3f}"]
            lines.append(f"| {pid}: {r['label']} | {', '.join(r['forms'])} | {r['size_mb']:.1f} | "
                         f"{r['planner_error']:.4f} | " + " | ".join(cells) + " |")
        notes = [f"{pid}: budget {r['budget_ms']} ms" + (f" ({r['note']})" if r.get("note") else "")
                 for pid, r in m["programs"].items() if "budget_ms" in r]
        lines += [""] + [f"- {n}" for n in notes] + ["- Cost tables: " + ", ".join(
            f"{t}t {m['profile'][str(t)]}" for t in threads), ""]
        lines += ["Measured break-even rank (smallest grid rank at which the pair is slower than the dense Linear "
                  "in the same form; '-' none on the grid) vs the parameter break-even in x out / (in + out):", "",
                  "| shape | form | parameter r* | grid | " + " | ".join(f"{t}t measured" for t in threads) + " |",
                  "|---|---|---:|---|" + "---:|" * len(threads)]
        for b in m["break_even"]:
            meas = [b["measured"][str(t)] for t in threads]
            lines.append(f"| {b['shape']} | {b['form']} | {b['param_r']} | {' '.join(map(str, b['grid']))} | "
                         + " | ".join("-" if v is None else str(v) for v in meas) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    head, t0 = _result_file.header(SCHEMA, __file__, argv), time.perf_counter()
    digest = hashlib.sha256(json.dumps([args.img_size, args.calib_images]).encode()).hexdigest()[:8]
    models = []
    for name in args.models:
        work = args.work / f"{name}-{digest}"
        work.mkdir(parents=True, exist_ok=True)
        tables = cost_tables(name, args, work)
        print(f"[{name}] programs ...", flush=True)
        rec = make_programs(name, args, work, tables)
        print(f"[{name}] measuring ...", flush=True)
        measure(name, args, work, tables, rec)
        from lraqvit_deploy.measure.costs import CostTable

        profile = {str(t): f"{CostTable.load(p).meta.get('profile_s')} s to profile" for t, p in tables.items()}
        models.append({"model": name, "img_size": args.img_size, "programs": rec, "break_even": break_even(tables),
                       "profile": profile, "tables": {str(t): json.loads(Path(p).read_text()) for t, p in tables.items()}})
    res = {**head, "seconds": round(time.perf_counter() - t0, 1), "threads": args.threads, "rounds": args.rounds,
           "iterations": args.iterations, "models": models}
    md = markdown(res)
    _result_file.write(args.out, res, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
