"""The Arm check: a .pte on each emulated CPU model within a time budget, scored against a reference."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.measure import closeness

from . import runner
from .cpus import CPU_MATRIX, DEFAULT_CPUS
from .runner import ArmTimeout
from .toolchain import ArmToolchain, find_toolchain

SCHEMA = "lraqvit-deploy/arm-verification/1"


TRACE_SHARE = 0.5  # of a CPU's time budget, at most, for the one traced image (instruction tracing is slow)


def _bounded_run(pte, images: torch.Tensor, cpu: str, threads: int, tc: ArmToolchain, trace_kernels: bool,
                 budget: Optional[float], progress: bool) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Run `images` on emulated `cpu` within `budget` seconds (None: unbounded), in three stages:

    1. one image under instruction tracing (the kernel report), given at most TRACE_SHARE of the budget;
       past that it is stopped and the kernels are reported as not traced, the check goes on untraced;
    2. one image untraced: the measured emulation speed of THIS program (precision) on THIS CPU model;
    3. as many of the remaining images as that speed fits in what is left of the budget.
    Returns (logits of the images that ran, info: `wall_s`, `seconds_per_image`, `kernels`, `budget_note`
    when fewer images ran than asked). Raises ArmTimeout when not even one image finished in time.
    """
    t0 = time.perf_counter()
    n = len(images)
    left = (lambda: None) if budget is None else (lambda: budget - (time.perf_counter() - t0))
    say = (lambda msg: print(f"arm check {cpu}: {msg}", flush=True)) if progress else (lambda msg: None)
    outs: List[torch.Tensor] = []
    kernels, features = None, None
    if trace_kernels:
        share = None if budget is None else budget * TRACE_SHARE
        try:
            o, info = runner.run_native(pte, images[:1], cpu=cpu, threads=threads, iterations=0, toolchain=tc,
                                 trace_kernels=True, timeout=share)
            outs.append(o)
            kernels, features = info.get("kernels"), info.get("cpu_features")
            say(f"1 image traced in {info['wall_s']:.1f} s (kernels named)")
        except ArmTimeout:
            kernels = {"method": "not traced", "how": f"the traced image ran past {share:g} s "
                                                      f"({TRACE_SHARE:.0%} of the CPU's budget) and was stopped"}
            say(f"tracing stopped after {share:g} s; going on untraced")
    done = len(outs)
    per_image = None
    if done < n:  # the speed probe: one image, untraced
        remaining = left()
        if remaining is not None and remaining <= 0 and not done:
            raise ArmTimeout(f"pte_runner on {cpu} ran past {budget:g} s and was stopped")
        remaining = None if remaining is None else max(remaining, 1e-3)
        try:
            o, info = runner.run_native(pte, images[done: done + 1], cpu=cpu, threads=threads, iterations=0, toolchain=tc,
                                 timeout=remaining)
        except ArmTimeout:
            if done:  # the traced image stands: a partial result
                return torch.cat(outs), {"wall_s": time.perf_counter() - t0, "seconds_per_image": None,
                                         "cpu_features": features or {}, "kernels": kernels,
                                         "budget_note": f"1 of {n} images ran within the {budget:g} s budget"}
            raise ArmTimeout(f"pte_runner on {cpu} ran past {budget:g} s and was stopped") from None
        outs.append(o)
        features = features or info.get("cpu_features")
        per_image = info["wall_s"]
        done += 1
    note = None
    if done < n:
        remaining = left()
        fit = n - done if remaining is None else min(n - done, int(0.8 * remaining / max(per_image, 1e-3)))
        say(f"{per_image:.1f} s per image ({1 / max(per_image, 1e-9):.2f} images/s): "
            f"{fit} more of {n - done}" + ("" if remaining is None else f" in the {remaining:.0f} s left"))
        if fit > 0:
            try:
                o, info = runner.run_native(pte, images[done: done + fit], cpu=cpu, threads=threads, iterations=0,
                                     toolchain=tc, timeout=left())
                outs.append(o)
                done += fit
                per_image = info["wall_s"] / fit
            except ArmTimeout:
                pass  # the images already run stand: a partial result, recorded as such
        if done < n:
            note = (f"{done} of {n} images ran within the {budget:g} s budget of this CPU "
                    f"(measured {per_image:.1f} s per image); raise --arm-timeout-s to check more")
    wall = time.perf_counter() - t0
    say(f"{done} image{'s' if done != 1 else ''} in {wall:.1f} s")
    info = {"wall_s": wall, "seconds_per_image": None if per_image is None else round(per_image, 3),
            "cpu_features": features or {}, "budget_note": note}
    if kernels is not None:
        info["kernels"] = kernels
    return torch.cat(outs), info


def arm_verification(pte, images: torch.Tensor, reference_logits: torch.Tensor,
                     labels: Optional[torch.Tensor] = None, cpus: Sequence[str] = DEFAULT_CPUS,
                     threads: int = 1, min_agreement: Optional[float] = None, trace_kernels: bool = True,
                     timeout_per_cpu: Optional[float] = None, toolchain: Optional[ArmToolchain] = None,
                     progress: bool = False, min_sqnr_db: Optional[float] = None) -> Dict[str, Any]:
    """Run `pte` on `images` under qemu-aarch64 for each CPU model and score it against the reference.

    Never raises for a CPU model that fails: its entry gets status "failed" and the reason. When
    the toolchain is missing, every CPU entry is "skipped" with the toolchain's reason. Each CPU model
    has `timeout_per_cpu` seconds (`_bounded_run`: one traced image for the kernel report, one untraced
    image to measure this program's emulation speed on this CPU, then as many images as that speed fits
    in the rest); the images that ran are scored (`images_planned`, `budget_note` say how many did not),
    and a CPU that finished no image is "timeout". The check is bounded by len(cpus) x timeout_per_cpu.
    Returns::

        {"schema": "lraqvit-deploy/arm-verification/1", "program": str, "n_images": int,
         "toolchain": {...paths, qemu_version...}, "skipped": None | reason,
         "cpus": {"<qemu cpu>": {
             "status": "ok" | "failed" | "skipped" | "timeout", "reason": None | str,
             "qemu_cpu", "isa", "phone_cores",             # from CPU_MATRIX (None for other models)
             "agreement": 0..1 argmax vs reference, "top1": % or None, "min_cosine",
             "sqnr_db": dB or None when bit-exact, "bit_exact", "max_abs_diff",
             "seconds": emulated wall time (not latency),
             "features": HWCAP names the emulated CPU reports,
             "kernels": {"method": "observed" | "inferred", "int8_gemm": [kai_run_* that ran],
                         "xnnpack_ukernels": [...], "family", "expected", "matches_expected",
                         "int8_instructions": {mnemonic: blocks}, "other_kleidiai", "how"}}}}

    `min_agreement`: a CPU below it is "failed" (default None: only execution failures and NaN/inf
    logits fail; a CPU whose logits hold a NaN or an inf always fails). With `min_sqnr_db` also
    given, a CPU below that SQNR fails, and the agreement compared is `gated_agreement` (near-tie
    flips counted as agreeing, as the host gate does: such flips are noise of the logits' size,
    and an error that is large everywhere fails the SQNR gate instead); without it, the raw
    agreement.
    """
    tc = toolchain if toolchain is not None else find_toolchain()
    ref = torch.as_tensor(reference_logits)
    result: Dict[str, Any] = {"schema": SCHEMA, "program": str(pte), "n_images": int(len(images)),
                              "toolchain": tc.describe(), "skipped": None if tc else tc.reason,
                              "min_agreement": min_agreement, "min_sqnr_db": min_sqnr_db, "cpus": {}}
    for cpu in cpus:
        model = CPU_MATRIX.get(cpu)
        entry: Dict[str, Any] = {"qemu_cpu": cpu, "isa": model.isa if model else None,
                                 "phone_cores": model.phone_cores if model else None,
                                 "status": "skipped", "reason": tc.reason}
        result["cpus"][cpu] = entry
        if not tc:
            continue
        t0 = time.perf_counter()
        try:
            out, info = _bounded_run(pte, images, cpu, threads, tc, trace_kernels, timeout_per_cpu, progress)
        except ArmTimeout as e:  # bounded: recorded as incomplete, the other models still run
            entry.update(status="timeout", reason=str(e), seconds=time.perf_counter() - t0)
            continue
        except DeployError as e:
            entry.update(status="failed", reason=str(e), seconds=time.perf_counter() - t0)
            continue
        except Exception as e:  # a bug or an OS error on one model must not lose the others
            entry.update(status="failed", reason=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0)
            continue
        metrics = closeness.compare_logits(out, ref[: len(out)], None if labels is None else labels[: len(out)])
        entry.update(metrics, min_cosine=metrics["cosine_min"], status="ok", reason=None, seconds=info["wall_s"],
                     features=info.get("cpu_features", {}).get("features"), images_planned=int(len(images)),
                     seconds_per_image=info.get("seconds_per_image"), budget_note=info.get("budget_note"))
        if "kernels" in info:
            entry["kernels"] = info["kernels"]
        # NaN/inf logits always fail; with min_sqnr_db the agreement compared counts near-tie flips as
        # agreeing (the host gate's rule), without it the raw agreement
        failed = closeness.gate_problems(metrics, {"min_agreement": min_agreement, "min_sqnr_db": min_sqnr_db},
                                         gated=min_sqnr_db is not None)
        if failed:
            entry.update(status="failed", reason="; ".join(failed))
    return result


def format_table(result: Dict[str, Any]) -> str:
    """A plain-text table of an `arm_verification` result."""
    rows = [f"{'cpu':<14} {'status':<8} {'agree':>6} {'min cos':>9} {'SQNR dB':>8} {'max|d|':>9} {'s':>6}  int8 GEMM"]
    for cpu, e in result["cpus"].items():
        if e["status"] != "ok":
            rows.append(f"{cpu:<14} {e['status']:<8} {e.get('reason') or ''}")
            continue
        k = e.get("kernels") or {}
        kern = ", ".join(k.get("xnnpack_ukernels") or []) \
            + ("; int4: " + ", ".join(k["int4_families"]) if k.get("int4_families") else "") \
            + (f" [{k.get('method')}]" if k else "")
        sq = "exact" if e["sqnr_db"] is None else f"{e['sqnr_db']:.1f}"
        rows.append(f"{cpu:<14} {e['status']:<8} {e['agreement']:>6.3f} {e['min_cosine']:>9.6f} {sq:>8} "
                    f"{e['max_abs_diff']:>9.2e} {e['seconds']:>6.1f}  {kern}")
    return "\n".join(rows)
