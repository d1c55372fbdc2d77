"""`compress(model, recipe, ...)`: the whole compression pipeline as one library call.

    allocate -> compress_ (LRA / RB-LRA) -> distill_ (block KD) -> merge_ -> quantize_ -> evaluate -> save

Data is passed explicitly (a Dataset, an ImageFolder path or `fashion-mnist[:train|:test]`); the
test bed brings its own splits. Everything the recipe will need is resolved and checked *before*
any SVD or training starts, so a missing dataset fails in a second, not after an hour.

    >>> from lraqvit_deploy import create_model, compress, Recipe, LowRankConfig, quant_config
    >>> model = create_model("testbed")
    >>> report = compress(model, Recipe(LowRankConfig("rb-lra", param_reduction=0.45), quant=quant_config("wads"),
    ...                                 distill=DistillConfig()), out="out/rb45-wads")
    >>> report.metrics["top1"], report.model          # the compressed model, also saved to out/
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import torch.nn as nn

from .errors import DeployError
from .measure.stages import stage
from .model_info import model_info, record
from .recipe import Recipe


@dataclass
class CompressionReport:
    """What `compress` did: the model, its metrics beside the dense baseline's, and the provenance.

    `to_dict()` is the JSON `deploy compress --json` writes (its keys are a stable interface).
    """

    model: nn.Module = field(repr=False)
    metrics: Dict[str, Any]
    compression: Optional[Dict[str, Any]]
    quantization: Optional[Dict[str, Any]]
    eval_data: str
    eval_limit: Optional[int] = None
    out: Optional[Path] = None
    evaluated: bool = True
    skipped_images: int = 0  # unreadable ImageFolder images left out (skip_bad_images=True / --skip-bad-images)
    # seconds per stage ("total", "low_rank", "allocation", "svd", "distill", "quantize", "evaluate";
    # lraqvit_deploy.measure.stages): what a caller times without patching anything
    stage_seconds: Dict[str, Any] = field(default_factory=dict)

    def manifest_extra(self) -> Dict[str, Any]:
        """The artifact manifest's entries beyond the model itself."""
        extra = {"compression": self.compression, "quantization": self.quantization, "metrics": self.metrics,
                 "eval_data": self.eval_data, "eval_limit": self.eval_limit}
        if self.skipped_images:
            extra["skipped_images"] = self.skipped_images
        return extra

    def save(self, out) -> Path:
        from .artifacts import save_model_artifact

        self.out = save_model_artifact(out, self.model, self.manifest_extra())
        return self.out

    def to_dict(self) -> Dict[str, Any]:
        info = self.compression or {}
        distill = info.get("distill") or {}
        quant = self.quantization or {}
        return {"model": model_info(self.model).spec.name, "method": info.get("method", "dense"),
                "param_reduction_target": (info.get("config") or {}).get("param_reduction"), **self.metrics,
                "kd_steps": distill.get("steps", 0), "kd_final_loss": distill.get("final_loss"),
                "kd_seconds": distill.get("seconds"), "kd_world_size": distill.get("world_size"),
                "calib_seconds": quant.get("calib_seconds"), "wads_seconds": quant.get("search_seconds"),
                "out": None if self.out is None else str(self.out), "skipped_images": self.skipped_images,
                "size_budget_mb": (info.get("config") or {}).get("size_budget_mb"),
                "target": (info.get("config") or {}).get("target"), "planned_size_mb": info.get("planned_size_mb"),
                **_latency_report(info),
                "weight_forms": (info.get("rank_alloc") or {}).get("forms") if isinstance(info.get("rank_alloc"), dict)
                else None, "ranks": info.get("ranks"), "stage_seconds": self.stage_seconds}


def _latency_report(info: Dict[str, Any]) -> Dict[str, Any]:
    """The report's entries of a latency-budget plan (none otherwise): the prediction and its cost table."""
    lat = info.get("latency") or {}
    if info.get("predicted_latency_ms") is None:
        return {}
    return {"latency_budget_ms": lat.get("latency_budget_ms"), "speedup": lat.get("speedup"),
            "predicted_latency_ms": info["predicted_latency_ms"], "predicted_dense_fp32_ms": lat.get("dense_fp32_ms"),
            "predicted_rest_ms": lat.get("rest_ms"), "planned_loss": lat.get("planned_loss"),
            "cost_table": lat.get("cost_table"),
            "cost_table_threads": lat.get("threads"), "cost_table_cpu": lat.get("cpu"),
            "latency_note": lat.get("note")}


def _describe(data: Any, default: str) -> str:
    if data is None:
        return default
    return str(data) if isinstance(data, (str, Path)) else type(data).__name__


def _check_model(model: nn.Module, recipe: Recipe) -> None:
    from .layers import QuantLinear
    from .vit_layout import check_replaceable

    if model_info(model).spec is None:
        raise DeployError("the model has no ModelInfo spec; create it with lraqvit_deploy.create_model(...) or load "
                          "an artifact with lraqvit_deploy.load_artifact(...).")
    check_replaceable(model)
    if recipe.empty:
        raise DeployError("nothing to do: the recipe has neither a low-rank method (--method lra|rb-lra) nor a "
                          "quantization method (--quant METHOD).")
    if recipe.compresses and model_info(model).manifest is not None:
        raise DeployError("the model is an artifact: re-compressing it is not supported; start from the original "
                          "weights (--model), or only quantize the artifact (--quant).")
    if recipe.quant is not None and any(isinstance(m, QuantLinear) for m in model.modules()):
        raise DeployError("the model is already quantized; quantize a model only once (start from its FP32 artifact).")


def _svd_kind(model: nn.Module, recipe: Recipe, have_images: bool, progress: bool) -> str:
    """`auto` whitens by the activations whenever calibration images are at hand (docs/compress.md)."""
    kind = recipe.low_rank.svd
    if kind != "auto":
        return kind
    if have_images or recipe.allocation.method != "uniform":
        return "activation"
    if progress:
        print("note: plain SVD (no calibration images); pass --alloc-calib-data or --train-data for the "
              "activation-aware SVD, usually far more accurate.")
    return "plain"


def quantize(model: nn.Module, config, calib_data: Any = None, n_images: int = 32, seed: int = 0) -> nn.Module:
    """INT8-quantize `model` in place with `config` (e.g. `quant_config("wads")`); returns it.

    `calib_data` is an (N, 3, H, W) tensor, a Dataset or a spec string; the test bed defaults to its
    training split. `model_info(model).quant` then records the config and the calibration summary.
    """
    from .data_sources import calibration_images
    from .quant import quantize_

    images = calibration_images(model, n_images, calib_data, seed, why="INT8 calibration (--quant)")
    summary = quantize_(model, config, images)
    record(model, quant={"config": config.to_dict(), **summary.__dict__})
    return model


def default_checkpoint(out) -> Optional[Path]:
    """Where `compress(..., out=OUT)` keeps its distillation checkpoint unless told: OUT.kd-checkpoint.pt."""
    return None if out is None else Path(str(out).rstrip("/") + ".kd-checkpoint.pt")


def check_checkpoint(checkpoint, resume: bool, recipe: Recipe, model: Optional[nn.Module] = None,
                     svd: Optional[str] = None, flag: str = "--checkpoint") -> Optional[Dict[str, Any]]:
    """Before any SVD or training: check the distillation checkpoint `compress` would write or resume.

    A folder, or an existing file that is not a distillation checkpoint (it would be overwritten),
    is refused. With `resume`, the checkpoint is read (tensors memory-mapped) and compared with the
    settings it was made with: the distillation config, and, when `model` (and `svd`) are given, the
    model and its low-rank config. A mismatch is one line naming what differs and what to do.
    Returns the checkpoint's content when it will be resumed, else None.
    """
    from .files import bad_file, check_output_file, is_kd_checkpoint, read_kd_checkpoint

    if checkpoint is None or recipe.distill is None:
        return None
    path = check_output_file(checkpoint, flag, "kd-checkpoint.pt")
    if not path.exists():
        return None
    if not resume:
        if not is_kd_checkpoint(path):
            raise DeployError(f"{flag} {path}: exists and is not a distillation checkpoint, so distillation would "
                              f"overwrite it; delete it or pass another {flag}.")
        return None
    from .lowrank.distill import CHECKPOINT_FORMAT

    state = read_kd_checkpoint(path, CHECKPOINT_FORMAT, flag)
    what = f"a distillation checkpoint ({flag}) written by `deploy compress`"
    import json

    try:
        stored = json.loads(state["fingerprint"])
        stored_cfg, stored_extra = dict(stored["config"]), dict(stored.get("extra") or {})
    except (ValueError, KeyError, TypeError):
        raise bad_file(path, what, "its settings record (fingerprint) is unreadable",
                       f"delete it or pass another {flag}") from None
    ours = json.loads(_fingerprint_of(recipe, model, svd))
    from .lowrank.distill.loop import lowered_lr  # a lower lr resumes a diverged run (docs/compress.md)

    from .lowrank import DistillConfig
    from .options import flag_of  # the message names the flags: the CLI's --resume is what users meet here

    diffs = [f"{flag_of(DistillConfig, k) or 'distill.' + k} {stored_cfg.get(k)!r} there, "
             f"{ours['config'].get(k)!r} here"
             for k in sorted(set(stored_cfg) | set(ours["config"])) if stored_cfg.get(k) != ours["config"].get(k)
             and not lowered_lr(k, stored_cfg.get(k), ours["config"].get(k), stored_cfg, ours["config"])]
    if model is not None:
        if stored_extra.get("model") != ours["extra"]["model"]:
            there = (stored_extra.get("model") or {})
            diffs.append(f"model {there.get('name')!r} ({there.get('weights')}) there, "
                         f"{model_info(model).spec.name!r} ({model_info(model).spec.weights}) here")
        skip = {"ranks", "param_reduction"} if recipe.allocation.method != "uniform" else set()
        if svd is None:
            skip.add("svd")
        lr_there, lr_here = stored_extra.get("low_rank") or {}, ours["extra"]["low_rank"]
        diffs += [f"low_rank.{k} {lr_there.get(k)!r} there, {lr_here.get(k)!r} here"
                  for k in sorted(set(lr_there) | set(lr_here)) if k not in skip and lr_there.get(k) != lr_here.get(k)]
    if diffs:
        more = f", and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        raise DeployError(f"{flag} {path}: made with other settings ({'; '.join(diffs[:3])}{more}); rerun with "
                          "the options it was made with, or without --resume to start afresh (the checkpoint is "
                          "then replaced), or delete it.")
    return state


def check_distill_device(recipe: Recipe) -> None:
    """The distillation's precision mode runs on the device it will use (e.g. fp16 needs CUDA): checked now."""
    if recipe.distill is None:
        return
    from .lowrank.distill.distributed import process_device
    from .lowrank.distill.loop import resolve_amp

    resolve_amp(recipe.distill.amp, process_device(recipe.distill.device))


def _fingerprint_of(recipe: Recipe, model: Optional[nn.Module], svd: Optional[str]) -> str:
    """The distillation loop's own fingerprint of these settings (its `shapes` part is left empty)."""
    from .lowrank.distill.distributed import process_device
    from .lowrank.distill.loop import _fingerprint, resolve_amp

    amp, _ = resolve_amp(recipe.distill.amp, process_device(recipe.distill.device))
    if recipe.low_rank is None:  # MLoRQ + distillation: the allocation stands for the low-rank settings
        lr_dict = {"allocation": recipe.allocation.to_dict()}
    else:
        lr_dict = (recipe.low_rank if svd is None else dataclasses.replace(recipe.low_rank, svd=svd)).to_dict()
    extra = {"model": None if model is None else model_info(model).spec.to_dict(), "low_rank": lr_dict}
    return _fingerprint(nn.Module(), recipe.distill, extra, amp)


def compress(model: nn.Module, recipe: Recipe, *, train_data: Any = None, calib_data: Any = None,
             alloc_data: Any = None, eval_data: Any = None, eval_limit: Optional[int] = None,
             train_limit: Optional[int] = None, evaluate: bool = True, out=None,
             checkpoint: Optional[Path] = None, resume: bool = False, progress: bool = True,
             skip_bad_images: bool = False) -> CompressionReport:
    """Run `recipe` on `model` (in place) and return a `CompressionReport`; save it to `out` if given.

    Args:
        train_data: distillation images (test bed: Fashion-MNIST train).
        calib_data: INT8 calibration images (test bed: Fashion-MNIST train).
        alloc_data: images for the activation-aware SVD and rank allocation (default: train_data, then calib_data).
        eval_data / eval_limit: labelled images to score the model and its dense baseline on (test bed: its
            test subset). A timm model without eval data is compressed and measured (params, GFLOPs, size)
            but not scored; the report says so.
        evaluate: False skips scoring altogether (what `deploy build --method ...` does).
        checkpoint / resume: the distillation checkpoint (default OUT.kd-checkpoint.pt) and whether to continue it;
            it is checked (format, and the settings it was made with) before any SVD or training.
        skip_bad_images: leave out the ImageFolder images PIL cannot read (their count is the report's
            `skipped_images`) instead of failing on the first one, which is named.
    Under `torchrun`, every process runs the distillation; only rank 0 evaluates and saves.
    """
    from .lowrank import init_distributed
    from .data_sources import calibration_images, eval_dataset, is_testbed, train_dataset
    from .evaluate import evaluate as score

    if not isinstance(recipe, Recipe):
        raise DeployError(f"compress() takes a Recipe, got {type(recipe).__name__}.")
    _check_model(model, recipe)
    # ---- resolve every input before any heavy work --------------------------------------------
    from .data import skipped_images
    from .files import check_output_dir

    if out is not None:
        check_output_dir(out)
    if recipe.distill is not None and checkpoint is None:
        checkpoint = default_checkpoint(out)
    check_distill_device(recipe)
    check_checkpoint(checkpoint, resume, recipe)  # the file and the distillation config, before any data is read
    latency = None
    if recipe.allocation.has_latency_budget:  # the cost table, before any data is read (a missing one is one line)
        from .rank_alloc.latency import latency_model

        latency = latency_model(model, recipe.allocation.cost_table, recipe.allocation.latency_threads,
                                target=recipe.allocation.target)
    skip = bool(skip_bad_images)
    skipped: set = set()
    eval_ds, eval_desc = (eval_dataset(model, eval_data, eval_limit, required=False, skip_bad_images=skip)
                          if evaluate else (None, "not evaluated"))
    train_ds = None
    if recipe.distill is not None:
        train_ds = train_dataset(model, train_data, train_limit, recipe.distill.seed, why="distillation",
                                 skip_bad_images=skip)
    skipped.update(skipped_images(eval_ds, train_ds))
    quant_images = None
    if recipe.quant is not None:
        quant_images = calibration_images(model, recipe.quant_calib_images, calib_data, 0,
                                          why="INT8 calibration (--quant)", skip_bad_images=skip, skipped=skipped)
    alloc_images, svd = None, None
    if recipe.compresses:
        source = next((d for d in (alloc_data, train_data, calib_data) if d is not None), None)
        if recipe.low_rank is not None:
            svd = _svd_kind(model, recipe, source is not None or is_testbed(model), progress)
        if svd == "activation" or recipe.allocation.method != "uniform":
            alloc_images = calibration_images(model, recipe.allocation.calib_images, source, 0,
                                              why="activation-aware SVD / rank allocation", skip_bad_images=skip,
                                              skipped=skipped)
    if resume and checkpoint is not None and recipe.distill is not None:
        if check_checkpoint(checkpoint, resume, recipe, model, svd) is None and progress:
            print(f"note: no distillation checkpoint at {checkpoint} yet; distillation starts from step 0.")

    from .measure.stages import recording, rounded

    with recording() as times, stage("total"):  # report.stage_seconds
        # ---- the steps ------------------------------------------------------------------------------
        rank, world = init_distributed()
        source_manifest = model_info(model).manifest or {}
        baseline = copy.deepcopy(model) if evaluate and eval_ds is not None else None
        info = source_manifest.get("compression")
        if recipe.compresses:
            with stage("low_rank"):  # allocation + SVD + distillation + merge
                info = _low_rank(model, recipe, svd, alloc_images, train_ds, checkpoint, resume, progress,
                                 train_data, latency)
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
        if rank != 0:
            return CompressionReport(model, {}, info, None, eval_desc, eval_limit, None, False, len(skipped))

        base, base_res = _baseline_metrics(source_manifest, baseline, eval_ds, progress)
        base["probe_top1"] = _probe_top1(model, source_manifest, base, eval_ds, progress)
        del baseline
        fp32 = score(model, eval_ds, batch_size=64, progress=progress) if eval_ds is not None else None
        quant_info = source_manifest.get("quantization")
        if recipe.quant is not None:
            from .quant import quantize_

            config = recipe.quant
            if not progress and getattr(config, "progress", False):
                config = dataclasses.replace(config, progress=False)
            with stage("quantize"):
                summary = quantize_(model, config, quant_images)
            quant_info = record(model, quant={"config": config.to_dict(), **summary.__dict__}).quant
        res = score(model, eval_ds, batch_size=64, progress=progress) if (eval_ds is not None and recipe.quant) else fp32
        metrics = _metrics(model, res, fp32, base, recipe, base_res)
        report = CompressionReport(model, metrics, info, quant_info if recipe.quant else quant_info,
                                   _describe(eval_data, "test bed test subset") if eval_ds is not None else eval_desc,
                                   eval_limit, evaluated=eval_ds is not None, skipped_images=len(skipped))
        record(model, compression=info)
    report.stage_seconds = rounded(times)
    if out is not None:
        report.save(out)
    return report


def _baseline_metrics(source_manifest: Dict[str, Any], baseline, eval_ds, progress: bool):
    """The dense model's top-1/params/GFLOPs/size (an artifact's recorded baseline, else measured) and,
    when measured here, its `EvalResult` (per-image correctness, for the paired interval)."""
    known = source_manifest.get("metrics", {})
    if "baseline_top1" in known:  # an artifact: its baseline is the dense model it was made from
        return {k: known.get(f"baseline_{k}") for k in ("top1", "params", "gflops", "size_mb")}, None
    if baseline is not None and eval_ds is not None:
        from .evaluate import evaluate as score

        res = score(baseline, eval_ds, batch_size=64, progress=progress)
        return res.to_dict(), res
    return {"top1": None, "params": None, "gflops": None, "size_mb": None}, None


def _probe_top1(model: nn.Module, source_manifest: Dict[str, Any], base: Dict[str, Any], eval_ds,
                progress: bool) -> Optional[float]:
    """The test bed's probe-only top-1 on the same images, reported beside the converged reference.

    None for other models (and for artifacts that did not record it)."""
    known = source_manifest.get("metrics", {})
    if "baseline_top1" in known:
        return known.get("probe_top1")
    from .models import TESTBED

    spec = model_info(model).spec
    if eval_ds is None or spec is None or spec.name != TESTBED or spec.testbed_reference is None:
        return None
    if spec.testbed_reference == "probe":
        return base["top1"]
    from .evaluate import evaluate as score
    from .models import testbed

    probe = testbed.build(testbed.get_profile(spec.testbed_profile or "quick"), progress=progress, reference="probe")
    return score(probe, eval_ds, batch_size=64, progress=progress).top1


def _metrics(model: nn.Module, res, fp32, base: Dict[str, Any], recipe: Recipe, base_res=None) -> Dict[str, Any]:
    from .evaluate import count_gflops, count_params
    from .quant import quantized_size_mb

    params = res.params if res is not None else count_params(model)
    gflops = res.gflops if res is not None else count_gflops(model)
    top1 = None if res is None else res.top1
    size = quantized_size_mb(model)  # low-bit weights (quantization, MLoRQ) at their stored width
    if base.get("params") is None:  # not evaluated: the dense figures come from the recipe's own record
        base = {**base, "params": (model_info(model).compression or {}).get("params_dense")}
    paired = None if res is None or base_res is None else res.paired_with(base_res)
    return {
        "top1": top1, "baseline_top1": base["top1"],
        "top1_diff": None if top1 is None or base["top1"] is None else top1 - base["top1"],
        "top1_diff_ci95": None if paired is None else list(paired.ci95_pt),
        "top1_diff_mcnemar_p": None if paired is None else paired.mcnemar_p,
        "probe_top1": base.get("probe_top1"),
        "fp32_top1": None if fp32 is None else fp32.top1,
        "quant": "none" if recipe.quant is None else recipe.quant.method,
        "params": params, "baseline_params": base["params"],
        "param_reduction": None if not base["params"] else 1.0 - params / base["params"],
        "gflops": gflops, "baseline_gflops": base["gflops"],
        "size_mb": size, "baseline_size_mb": base["size_mb"], "n_images": None if res is None else res.n_images,
    }


def _low_rank(model: nn.Module, recipe: Recipe, svd: str, images, train_ds, checkpoint, resume: bool,
              progress: bool, train_data: Any, latency=None) -> Dict[str, Any]:
    """Allocation -> low rank -> distillation -> merge, in place; returns the manifest's `compression` entry."""
    from .lowrank import compress_, distill_, is_main_process, merge_
    from .evaluate import count_params

    low_rank, alloc = recipe.low_rank, recipe.allocation
    dense_params = count_params(model)
    if alloc.method == "mlorq":
        return _mlorq(model, recipe, images, dense_params, progress, train_ds, checkpoint, resume, train_data,
                      latency)
    teacher = copy.deepcopy(model).eval() if recipe.distill is not None else None
    allocation = None
    if alloc.method == "energy":
        from .rank_alloc import allocate

        with stage("allocation"):
            allocation = allocate(model, "energy", low_rank.param_reduction, images=images,
                                  activation_aware=alloc.activation_aware, progress=progress)
        ranks = {n: r for n, r in allocation.ranks.items() if r is not None}
        low_rank = dataclasses.replace(low_rank, param_reduction=None, ranks=ranks)
    low_rank = dataclasses.replace(low_rank, svd=svd)
    with stage("svd"):
        ranks = compress_(model, low_rank, images if svd == "activation" else None)
    info: Dict[str, Any] = {"method": low_rank.method, "config": low_rank.to_dict(), "ranks": ranks,
                            "params_dense": dense_params, "distill": None,
                            "rank_alloc": alloc.method if allocation is None else allocation.to_dict()}
    if allocation is not None:
        info["config"]["param_reduction"] = recipe.low_rank.param_reduction
    info["config"]["ranks"] = None if low_rank.ranks is None else "per-layer (see ranks)"
    if recipe.distill is not None:
        with stage("distill"):
            result = distill_(model, teacher, train_ds, recipe.distill, checkpoint=checkpoint, resume=resume,
                              fingerprint_extra={"model": model_info(model).spec.to_dict(),
                                                 "low_rank": low_rank.to_dict()}, progress=progress)
        info["distill"] = {"config": recipe.distill.to_dict(),
                           "train_data": _describe(train_data, "fashion-mnist:train"),
                           "train_images": len(train_ds), **result.to_dict()}
        if is_main_process() and checkpoint is not None:
            Path(checkpoint).unlink(missing_ok=True)
    merge_(model)
    record(model, compression=info)
    return info


def _mlorq(model: nn.Module, recipe: Recipe, images, dense_params: int, progress: bool, train_ds=None,
           checkpoint=None, resume: bool = False, train_data: Any = None, latency=None) -> Dict[str, Any]:
    """MLoRQ: per-layer (rank, weight form) by an ILP under the budget; with a distillation config, the
    planned ranks are built in float, distilled block by block, then quantized as planned."""
    from .rank_alloc import allocate, apply_plan_, check_target
    from .rank_alloc.plan import quantize_plan_

    alloc = recipe.allocation
    dense, factor = alloc.target_bits()
    target = alloc.target
    teacher = copy.deepcopy(model).eval() if recipe.distill is not None else None
    with stage("allocation"):
        allocation = allocate(model, "mlorq", None, alloc.memory_budget_mb, images, alloc.activation_aware,
                              progress=progress, dense_bits=dense, factor_bits=factor,
                              size_budget_mb=alloc.size_budget_mb, target=target,
                              latency_budget_ms=alloc.latency_budget_ms, speedup=alloc.speedup, latency=latency)
    check_target(allocation.plan, target or alloc.mlorq_target)
    distill_info = None
    if recipe.distill is None:
        apply_plan_(model, allocation.plan, allocation.stats, target=target)
    else:
        from .lowrank import distill_, is_main_process

        apply_plan_(model, allocation.plan, allocation.stats, quantize=False)  # float factors at the planned ranks
        extra = {"model": model_info(model).spec.to_dict(), "low_rank": {"allocation": alloc.to_dict()}}
        with stage("distill"):
            result = distill_(model, teacher, train_ds, recipe.distill, checkpoint=checkpoint, resume=resume,
                              fingerprint_extra=extra, progress=progress)
        distill_info = {"config": recipe.distill.to_dict(), "train_data": _describe(train_data, "fashion-mnist:train"),
                        "train_images": len(train_ds), **result.to_dict()}
        if is_main_process() and checkpoint is not None:
            Path(checkpoint).unlink(missing_ok=True)
        quantize_plan_(model, allocation.plan, target, allocation.stats)
    if target == "jetson":  # per-tensor activation scales for the Q/DQ engine, recorded like quantize_ does
        from .quant.calibrate import record_tensor_act_scales_

        record_tensor_act_scales_(model, images)
    info = {"method": "lra" if recipe.low_rank is None else recipe.low_rank.method,  # MLoRQ: plain factors
            "config": {"param_reduction": None, "rank_alloc": "mlorq", "memory_budget_mb": alloc.memory_budget_mb,
                       "size_budget_mb": alloc.size_budget_mb, "target": target,
                       **({"latency_budget_ms": alloc.latency_budget_ms, "speedup": alloc.speedup,
                           "cost_table": alloc.cost_table} if alloc.has_latency_budget else {})},
            "ranks": {n: r for n, r in allocation.ranks.items() if r is not None},
            "params_dense": dense_params, "distill": distill_info, "rank_alloc": allocation.to_dict()}
    if "planned_size_mb" in allocation.summary:
        info["planned_size_mb"] = allocation.summary["planned_size_mb"]
    if "predicted_latency_ms" in allocation.summary:  # a latency-budget plan: the prediction and its table
        s = allocation.summary
        info["predicted_latency_ms"] = s["predicted_latency_ms"]
        info["latency"] = {k: s.get(k) for k in ("latency_budget_ms", "speedup", "dense_fp32_ms", "fastest_ms",
                                                 "planned_loss",
                                                 "predicted_latency_ms", "linears_ms", "rest_ms", "rest_known",
                                                 "cost_table", "table_target", "threads", "cpu", "model", "stat",
                                                 "note")}
    record(model, compression=info)
    return info
