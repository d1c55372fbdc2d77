"""The model families end to end (issue 27), as a user runs them: random weights, LRA -30 % + per-token INT8,
then the Android build (host runtime + emulated Arm CPUs), the Jetson build (Q/DQ ONNX in onnxruntime) and
`deploy bench --target host`, each step's wall time and every gate's figure recorded.

    python benchmarks/model_coverage.py [--models M,M] [--work DIR]     # run the commands below per model
    python benchmarks/model_coverage.py --collect --work DIR            # only read DIR (and bench the .pte)

Per model M, in WORK:
    deploy compress --model M --weights random --method lra --param-reduction 0.3 --kd-steps 0 --quant per-token \
        --calib-data fashion-mnist:train --data fashion-mnist:test --limit 64 --out WORK/M --json WORK/M.compress.json
    deploy build --target android WORK/M --data fashion-mnist:test --limit 64 --out WORK/M-android
    deploy build --target jetson WORK/M --data fashion-mnist:test --limit 64 --out WORK/M-jetson
    deploy bench --target host WORK/M-android --iterations 5 --warmup 1 --json WORK/M.bench.json
(--kd-steps 0: distilling a random ViT-B is hours on 2 cores and says nothing; distillation on the rewritten
blocks is tested in tests/lraqvit_deploy/models/test_families.py.) Step times go to WORK/times.json.
Writes OUT.json (default benchmarks/results/model_coverage); docs/models.md renders it (benchmarks/render_docs.py).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import _result_file
from lraqvit_deploy.io import read_json, write_json

DONE_WHEN = ("vit_base_patch16_siglip_224", "eva02_tiny_patch14_224", "beit_base_patch16_224",
             "swinv2_tiny_window8_256")
OUT = Path(__file__).parent / "results" / "model_coverage"
DEPLOY = [sys.executable, "-m", "lraqvit_deploy"]
DATA = ["--data", "fashion-mnist:test", "--limit", "64"]


def commands(m: str, work: Path):
    return {
        "compress": ["compress", "--model", m, "--weights", "random", "--method", "lra", "--param-reduction", "0.3",
                     "--kd-steps", "0", "--quant", "per-token", "--calib-data", "fashion-mnist:train", *DATA,
                     "--quiet", "--out", str(work / m), "--json", str(work / f"{m}.compress.json")],
        "android": ["build", "--target", "android", str(work / m), *DATA, "--quiet", "--out", str(work / f"{m}-android")],
        "jetson": ["build", "--target", "jetson", str(work / m), *DATA, "--quiet", "--out", str(work / f"{m}-jetson")],
        "bench": ["bench", "--target", "host", str(work / f"{m}-android"), "--iterations", "5", "--warmup", "1",
                  "--quiet", "--json", str(work / f"{m}.bench.json")],
    }


def run(models, work: Path, steps=("compress", "android", "jetson", "bench")) -> None:
    times_path = work / "times.json"
    times = read_json(times_path) if times_path.is_file() else {}
    for m in models:
        for step in steps:
            t0 = time.time()
            rc = subprocess.run(DEPLOY + commands(m, work)[step]).returncode
            times.setdefault(m, {})[step] = {"seconds": round(time.time() - t0, 1), "rc": rc}
            write_json(times_path, times)
            if rc:
                break


def collect(models, work: Path):
    times = read_json(work / "times.json") if (work / "times.json").is_file() else {}
    rows = []
    for m in models:
        r = {"model": m, "seconds": {s: v["seconds"] for s, v in (times.get(m) or {}).items() if v.get("rc") == 0}}
        c, a, j, b = (work / f"{m}.compress.json", work / f"{m}-android" / "manifest.json",
                      work / f"{m}-jetson" / "manifest.json", work / f"{m}.bench.json")
        if c.is_file():
            c = read_json(c)
            r.update(params=c["params"], baseline_params=c["baseline_params"], param_reduction=c["param_reduction"])
        if a.is_file():
            a = read_json(a)
            v = a["verification"]
            r["android"] = {"pte_mb": a["size_mb"], "delegated_fraction": a["delegated_fraction"],
                            "outside_delegate": a["delegation"]["non_delegated_by_op"], "sqnr_db": v["sqnr_db"],
                            "min_sqnr_db": v["min_sqnr_db"], "n_images": v["n_images"],
                            "arm": {k: {"status": x["status"], "n_images": x.get("n_images"), "sqnr_db": x.get("sqnr_db")}
                                    for k, x in (a.get("arm_verification") or {}).get("cpus", {}).items()}}
        if j.is_file():
            j = read_json(j)
            r["jetson"] = {k: {"passed": x["passed"], "sqnr_db": x["sqnr_db"], "min_sqnr_db": x["gates"]["min_sqnr_db"]}
                           for k, x in j["closeness"].items()}
            r["jetson_structure_ok"] = all(s["ok"] for s in j["structure"].values())
        if b.is_file():
            b = read_json(b)
            r["host_bench"] = {"median_ms": b.get("median_ms"), "iterations": b.get("iterations"),
                               "threads": b.get("threads")}
        rows.append(r)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DONE_WHEN))
    p.add_argument("--work", type=Path, default=Path("/tmp/model_coverage"))
    p.add_argument("--collect", action="store_true", help="only read --work (benching .pte files not benched yet)")
    _result_file.add_out(p, OUT, markdown=False)
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.work.mkdir(parents=True, exist_ok=True)
    if args.collect:
        run([m for m in models if not (args.work / f"{m}.bench.json").is_file()
             and (args.work / f"{m}-android").is_dir()], args.work, steps=("bench",))
    else:
        run(models, args.work)
    path = _result_file.write(args.out, {
        **_result_file.header("lraqvit-deploy/model-coverage/1", __file__, argv),
        "commands": {k: "deploy " + " ".join(v) for k, v in commands("MODEL", Path("WORK")).items()},
        "rows": collect(models, args.work)})
    print(json.dumps({"wrote": str(path)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
