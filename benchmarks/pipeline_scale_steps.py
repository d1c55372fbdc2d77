"""The steps of `pipeline_scale.py`: the latency programs, each step's library call (run in its own process), the bench.

The constants say what the protocol is (programs, steps, what each needs and where it writes under
WORK/MODEL); `run_step` and `run_bench` run inside a step process (`pipeline_scale.py --step NAME`),
importing torch and the library only there; `figures/pipeline_scale.py` renders the report with the
same labels.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict

from lraqvit_deploy.measure.process import proc_status_kib
from lraqvit_deploy.measure.rounds import interleaved, measure_gemm, summarize_rounds

# the latency programs, in round-0 order; the first is the baseline every ratio is taken against
PROGRAMS = ("fp32", "pt2e-int8", "rb-fp32", "rb-wads-int8", "w4", "w4-g32", "mlorq-19.5", "mlorq-12.5")
DEFAULT_PROGRAMS = PROGRAMS[:4]  # the RB-LRA protocol; the 4-bit forms (issue 23) by --programs
PROGRAM_LABELS = {"fp32": "dense FP32", "pt2e-int8": "dense, stock PT2E INT8", "rb-fp32": "RB-LRA FP32",
                  "rb-wads-int8": "RB-LRA + WADS INT8", "w4": "dense W4 per channel (RTN)",
                  "w4-g32": "dense W4 g32 (RTN)", "mlorq-19.5": "MLoRQ at 19.5 % of the FP32 .pte",
                  "mlorq-12.5": "MLoRQ at 12.5 % of the FP32 .pte"}
PROGRAM_INT8 = {p: p != "fp32" and p != "rb-fp32" for p in PROGRAMS}  # int8 activations (4-bit weights too)
# which GFLOPs the floor uses: the dense model's, the RB-LRA artifact's, or the program's own compress step's
PROGRAM_FLOPS = {"fp32": "dense", "pt2e-int8": "dense", "rb-fp32": "rb", "rb-wads-int8": "rb", "w4": "dense",
                 "w4-g32": "dense", "mlorq-19.5": "mlorq-19.5", "mlorq-12.5": "mlorq-12.5"}
MLORQ_FRACTIONS = {"mlorq-19.5": 0.195, "mlorq-12.5": 0.125}  # of the dense FP32 .pte (the MLoRQ poster's points)

# step -> (what it does, steps it needs, output folder under WORK/MODEL)
STEPS: Dict[str, tuple] = {
    "compress": ("RB-LRA -45 % params (no KD)", (), "rb-lra"),
    "calibrate": ("WADS INT8 calibration", ("compress",), "rb-lra-wads"),
    "android-fp32": ("android build: dense FP32", (), "android-fp32"),
    "android-pt2e-int8": ("android build: dense, PT2E INT8", (), "android-pt2e-int8"),
    "android-rb-fp32": ("android build: RB-LRA FP32", ("compress",), "android-rb-fp32"),
    "android-rb-wads": ("android build: RB-LRA + WADS INT8", ("calibrate",), "android-rb-wads"),
    "jetson-rb-wads": ("jetson build: RB-LRA + WADS (Q/DQ ONNX)", ("calibrate",), "jetson-rb-wads"),
    "w4": ("dense W4 per channel, RTN (int8 per-token activations)", (), "w4"),
    "w4-g32": ("dense W4 blockwise g32, RTN", (), "w4-g32"),
    # the 19.5 % plan searches the candidates (cold cache); the 12.5 % plan reads them back
    "mlorq-19.5": ("MLoRQ plan + quantize, 19.5 % of the FP32 .pte", ("android-fp32",), "mlorq-19.5"),
    "mlorq-12.5": ("MLoRQ plan + quantize, 12.5 % of the FP32 .pte", ("android-fp32", "mlorq-19.5"), "mlorq-12.5"),
    "android-w4": ("android build: dense W4 per channel", ("w4",), "android-w4"),
    "android-w4-g32": ("android build: dense W4 g32", ("w4-g32",), "android-w4-g32"),
    "android-mlorq-19.5": ("android build: MLoRQ 19.5 %", ("mlorq-19.5",), "android-mlorq-19.5"),
    "android-mlorq-12.5": ("android build: MLoRQ 12.5 %", ("mlorq-12.5",), "android-mlorq-12.5"),
}
BUILD_OF_PROGRAM = {"fp32": "android-fp32", "pt2e-int8": "android-pt2e-int8", "rb-fp32": "android-rb-fp32",
                    "rb-wads-int8": "android-rb-wads", "w4": "android-w4", "w4-g32": "android-w4-g32",
                    "mlorq-19.5": "android-mlorq-19.5", "mlorq-12.5": "android-mlorq-12.5"}
# the build source of each android step: None = the seeded dense model, else the step whose artifact it builds
ANDROID_SOURCE = {"android-fp32": None, "android-pt2e-int8": None, "android-rb-fp32": "compress",
                  "android-rb-wads": "calibrate", "android-w4": "w4", "android-w4-g32": "w4-g32",
                  "android-mlorq-19.5": "mlorq-19.5", "android-mlorq-12.5": "mlorq-12.5"}


def steps_for(programs) -> list:
    """The steps the chosen programs need, in STEPS order (the Jetson build comes with the RB-LRA + WADS program)."""
    want = set()

    def add(step: str) -> None:
        if step not in want:
            want.add(step)
            for need in STEPS[step][1]:
                add(need)
    for p in programs:
        add(BUILD_OF_PROGRAM[p])
    if "rb-wads-int8" in programs:
        add("jetson-rb-wads")
    return [s for s in STEPS if s in want]



def _seeded_model(cfg: Dict[str, Any], name: str):
    import torch

    from lraqvit_deploy import create_model

    torch.manual_seed(cfg["seed"])  # random weights: the same dense model in every step process
    return create_model(name, weights="random", num_classes=cfg["num_classes"], img_size=cfg["img_size"],
                        progress=False)


def _calibration_images(cfg: Dict[str, Any], model):
    import torch

    n = cfg["calib_images"]
    if cfg["calib_data"] == "synthetic":
        from lraqvit_deploy.data import input_size

        g = torch.Generator().manual_seed(cfg["seed"])
        return torch.randn(n, *input_size(model), generator=g)
    from lraqvit_deploy.data_sources import calibration_images

    return calibration_images(model, n, cfg["calib_data"], seed=cfg["seed"], why="calibration")


def _verify_data(cfg: Dict[str, Any]):
    return None if cfg["verify_data"] == "synthetic" else cfg["verify_data"]


def run_step(step: str, cfg: Dict[str, Any], model_name: str, work: Path) -> Dict[str, Any]:
    """One step, in this (fresh) process; returns its record (seconds = the timed library call)."""
    import torch

    if cfg.get("work_threads"):
        torch.set_num_threads(cfg["work_threads"])
    from lraqvit_deploy import load_artifact
    from lraqvit_deploy.targets import build

    out = work / STEPS[step][2]
    info: Dict[str, Any] = {}
    call: Callable[[], Any]

    if step == "compress":
        from lraqvit_deploy import LowRankConfig, Recipe
        from lraqvit_deploy.evaluate import count_gflops, count_params
        from lraqvit_deploy.pipeline import compress

        model = _seeded_model(cfg, model_name)
        images = _calibration_images(cfg, model) if cfg["svd"] == "activation" else None
        info.update(params_dense=count_params(model), gflops_dense=count_gflops(model))
        recipe = Recipe(low_rank=LowRankConfig("rb-lra", param_reduction=cfg["param_reduction"], svd=cfg["svd"]))
        call = lambda: compress(model, recipe, alloc_data=images, evaluate=False, out=out, progress=False)  # noqa: E731
    elif step == "calibrate":
        from lraqvit_deploy import Recipe, quant_config
        from lraqvit_deploy.pipeline import compress

        model = load_artifact(work / STEPS["compress"][2])
        images = _calibration_images(cfg, model)
        fields = {} if cfg["wads_iters"] is None else {"wads_iters": cfg["wads_iters"]}
        recipe = Recipe(quant=quant_config("wads", progress=False, **fields), quant_calib_images=cfg["calib_images"])
        call = lambda: compress(model, recipe, calib_data=images, evaluate=False, out=out, progress=False)  # noqa: E731
    elif step.startswith("android-"):
        from lraqvit_deploy import AndroidBuildOptions

        source = ANDROID_SOURCE[step]
        model = _seeded_model(cfg, model_name) if source is None else load_artifact(work / STEPS[source][2])
        # an artifact that is quantized already builds as it is (its integers and scales); fp32 keeps floats
        precision = {"android-fp32": "fp32", "android-rb-fp32": "fp32"}.get(step, "q8")
        gate = {"min_agreement": cfg["int8_min_agreement"]} if (precision == "q8" and
                                                                 cfg.get("int8_min_agreement") is not None) else {}
        options = AndroidBuildOptions(precision=precision, verify_images=cfg["verify_images"],
                                      arm_verify=cfg["arm_verify"], progress=False, **gate)
        call = lambda: build(model, out, options, data=_verify_data(cfg), data_limit=cfg["verify_images"])  # noqa: E731
    elif step in ("w4", "w4-g32"):
        from lraqvit_deploy import Recipe, quant_config
        from lraqvit_deploy.pipeline import compress

        model = _seeded_model(cfg, model_name)
        q = quant_config("per-token", w_bits=4, w_group_size=32 if step == "w4-g32" else None,
                         act_scheme="per_token_dynamic", act_symmetric=False, progress=False)
        images = _calibration_images(cfg, model)
        recipe = Recipe(quant=q, quant_calib_images=cfg["calib_images"])
        call = lambda: compress(model, recipe, calib_data=images, evaluate=False, out=out, progress=False)  # noqa: E731
    elif step in MLORQ_FRACTIONS:
        from lraqvit_deploy import Recipe
        from lraqvit_deploy.pipeline import compress
        from lraqvit_deploy.recipe import AllocationConfig

        # the candidate cache of this run only: the first plan's search is timed cold, the next reads it back
        os.environ["LRAQVIT_CACHE"] = str(work / "plan-cache")
        fp32_mb = json.loads((work / STEPS["android-fp32"][2] / "manifest.json").read_text())["size_mb"]
        budget = round(fp32_mb * MLORQ_FRACTIONS[step], 3)
        model = _seeded_model(cfg, model_name)
        images = _calibration_images(cfg, model)
        info.update(fp32_pte_mb=fp32_mb, size_budget_mb=budget, fraction=MLORQ_FRACTIONS[step])
        recipe = Recipe(allocation=AllocationConfig(size_budget_mb=budget, target="android",
                                                    calib_images=cfg["calib_images"]),
                        quant_calib_images=cfg["calib_images"])
        call = lambda: compress(model, recipe, calib_data=images, alloc_data=images, evaluate=False, out=out,  # noqa: E731
                                progress=False)
    elif step == "jetson-rb-wads":
        from lraqvit_deploy import JetsonBuildOptions

        model = load_artifact(work / STEPS["calibrate"][2])
        images = _calibration_images(cfg, model)
        gate = {} if cfg.get("int8_min_agreement") is None else {"min_agreement": cfg["int8_min_agreement"]}
        options = JetsonBuildOptions(latency_iters=0, verify_images=cfg["verify_images"],
                                     calib_images=cfg["calib_images"], progress=False, **gate)
        call = lambda: build(model, out, options, data=_verify_data(cfg), calib_data=images,  # noqa: E731
                             data_limit=cfg["verify_images"])
    else:
        raise SystemExit(f"unknown step {step!r}")

    import gc

    gc.collect()
    start_rss, start_hwm = proc_status_kib(os.getpid(), "VmRSS"), proc_status_kib(os.getpid(), "VmHWM")
    t0 = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - t0
    info.update(_step_info(step, result))
    # the library's own stage timings (lraqvit_deploy.measure.stages), "total" aside: the step's seconds
    timers = {k: v for k, v in (getattr(result, "stage_seconds", None) or {}).items() if k != "total"}
    return {"ok": True, "seconds": seconds, "start_rss_kib": start_rss, "start_hwm_kib": start_hwm,
            "timers": timers, "info": info}


def _step_info(step: str, result) -> Dict[str, Any]:
    if step == "compress":
        comp = result.compression or {}
        return {"params_rb": result.metrics.get("params"), "gflops_rb": result.metrics.get("gflops"),
                "svd": (comp.get("config") or {}).get("svd"), "n_layers": len(comp.get("ranks") or {})}
    if step == "calibrate":
        q = result.quantization or {}
        return {"calib_seconds": q.get("calib_seconds"), "search_seconds": q.get("search_seconds"),
                "n_layers": q.get("n_layers"), "scaled_layers": len(q.get("scaled_layers") or []),
                "gflops_wads": result.metrics.get("gflops"), "size_mb_wads": result.metrics.get("size_mb"),
                "wads_config": {k: v for k, v in (q.get("config") or {}).items() if k.startswith("wads_")}}
    if step in ("w4", "w4-g32") or step in MLORQ_FRACTIONS:
        comp, q = result.compression or {}, result.quantization or {}
        alloc = comp.get("rank_alloc") if isinstance(comp.get("rank_alloc"), dict) else {}
        stages = getattr(result, "stage_seconds", None) or {}
        return {"gflops": result.metrics.get("gflops"), "params": result.metrics.get("params"),
                "planned_size_mb": comp.get("planned_size_mb"), "forms": alloc.get("forms"),
                "plan_seconds": (stages.get("allocation") or {}).get("seconds"),
                "n_layers": q.get("n_layers")}
    man = result.manifest
    if step.startswith("android-"):
        v = man.get("verification") or {}
        arm = man.get("arm_verification") or {}
        return {"agreement": man.get("agreement"), "sqnr_db": v.get("sqnr_db"), "size_mb": man.get("size_mb"),
                "quantization": man.get("quantization"), "delegated_fraction": man.get("delegated_fraction"),
                "arm": ("skipped: " + str(arm["skipped"])[:80]) if arm.get("skipped") else None}
    eq = man.get("engine_quantizer") or {}
    engines = man.get("engines")
    return {"agreement": man.get("agreement"), "size_mb": man.get("size_mb"),
            "engine_int8": eq.get("how"), "engine_int8_mode": eq.get("mode"),
            "onnx_files": sorted((man.get("onnx") or {}).values()),
            "engines": "built" if engines else "none (tensorrt does not import here)"}


def run_bench(cfg: Dict[str, Any], work: Path) -> Dict[str, Any]:
    """GEMM rates, then interleaved rounds of the built programs at each thread count (this process)."""
    from lraqvit_deploy import HostBenchOptions
    from lraqvit_deploy.targets import bench

    import torch

    start_threads = torch.get_num_threads()
    programs = [p for p in PROGRAMS if p in cfg.get("programs", DEFAULT_PROGRAMS)
                and (work / STEPS[BUILD_OF_PROGRAM[p]][2] / "manifest.json").is_file()]
    result: Dict[str, Any] = {"programs": programs, "gemm": {"shape": cfg["gemm_shape"], "fp32": {}, "int8": {},
                                                           "before": {}, "after": {}},
                              "threads": {}}

    def gemm(when: str) -> None:
        for t in cfg["threads"]:
            result["gemm"][when][str(t)] = measure_gemm(t, cfg["gemm_shape"], cfg["gemm_reps"])
        torch.set_num_threads(start_threads)

    gemm("before")
    t_start = time.perf_counter()
    for t in cfg["threads"]:
        def time_one(p: str, t=t) -> float:
            return bench(work / STEPS[BUILD_OF_PROGRAM[p]][2],
                         HostBenchOptions(iterations=cfg["iterations"], warmup=cfg["warmup"], threads=t,
                                          progress=False)).median_ms

        timed = interleaved(programs, time_one, cfg["rounds"])
        result["threads"][str(t)] = {**timed, "summary": summarize_rounds(timed["rounds"], PROGRAMS[0])}
    result["seconds"] = time.perf_counter() - t_start
    gemm("after")
    for t in map(str, cfg["threads"]):  # the rate used for the floor: the better of before / after the rounds
        for kind in ("fp32", "int8"):
            runs = [result["gemm"][w][t][kind] for w in ("before", "after")]
            result["gemm"][kind][t] = max(runs, key=lambda g: g.get("gops") or 0.0)
    return result
