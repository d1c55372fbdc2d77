"""`deploy profile --target {host,android} --model M`: flags -> `lraqvit_deploy.backends.executorch.cost_profile.profile_costs`."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "time every encoder-Linear shape of a model (dense and rank-r pairs, FP32/INT8/INT4) on a target"
DESCRIPTION = """\
Build a cost table: every distinct encoder-Linear shape of the model at its token count, timed
dense (FP32, INT8, INT4 per channel and group 32) and as rank-r pairs over a grid of ranks in each
form, as small programs in the target's own runtime (this host's ExecuTorch runtime, or a phone's
executor_runner over adb), in interleaved rounds. The table is written to
--out (JSON) and cached for this host, runtime and thread count (docs/profile.md).
--threads sets the runtime's threads (default 1); at more than 1 the cells are timed at 1 thread and
scaled by the whole model's measured speedup in their form (a cell alone leaves the other threads
idle; docs/latency_budget.md).

--target jetson: no TensorRT runs here, so --out is a FOLDER: every cell as an ONNX file (FP32, and
INT8 Q/DQ exported as `deploy build --target jetson` exports the model; each checked in onnxruntime),
the whole dense model, and jetson/profile.py. Copy the folder to the Jetson, run
`python3 jetson/profile.py` there (trtexec builds and times every cell in interleaved rounds: FP32,
FP16, INT8), and copy results/cost_table.json back for `deploy compress --target jetson --cost-table`.

examples:
  deploy profile --target host --model deit_small_patch16_224 --out deit_s_host.json
  deploy profile --target host --model deit_tiny_patch16_224 --threads 2 --rounds 5
  deploy profile --target android --serial R5CT... --model deit_small_patch16_224 --out deit_s_phone.json
  deploy profile --target jetson --model deit_small_patch16_224 --out deit_s_jetson_cells/
"""


def register(sub: argparse._SubParsersAction) -> None:
    from ..measure.costs import EXTRA_FORMS, TARGET_FORMS, TARGETS

    p = sub.add_parser("profile", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", "-t", default="host", choices=TARGETS,
                   help="host: this machine's ExecuTorch runtime; android: the phone's executor_runner over adb; "
                        "jetson: write the cells for trtexec on the device (default: host)")
    a = p.add_argument_group("android", "The phone (--target android), as for `deploy bench --target android`.")
    a.add_argument("--serial", default=None, help="device serial (default: $ANDROID_SERIAL or the only attached device)")
    a.add_argument("--adb", default=None, metavar="PATH", help="adb client (default: adb on PATH)")
    a.add_argument("--runner", default=None, metavar="PATH",
                   help="executor_runner built by android_runner/build_executor_runner.sh (default: the cache's)")
    g = p.add_argument_group("model", "Whose shapes: a timm ViT-family name (random weights: values do not change timings).")
    g.add_argument("--model", "-m", required=True, help="e.g. deit_small_patch16_224, or testbed")
    g.add_argument("--img-size", type=int, default=None, help="input resolution (sets the token count)")
    t = p.add_argument_group("timing")
    t.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3; jetson: the device script's "
                                                            "default)")
    t.add_argument("--iterations", "-n", type=int, default=None,
                   help="timed calls per cell and round (default 10; jetson: trtexec --iterations, default 200, "
                        "the device script's default)")
    t.add_argument("--warmup", type=int, default=None, help="untimed calls per cell before the rounds (default 3; "
                                                           "jetson: set --warmup-ms on the device)")
    forms = list(dict.fromkeys([*(f for t_ in TARGETS for f in TARGET_FORMS[t_]), *EXTRA_FORMS]))
    t.add_argument("--forms", nargs="+", choices=forms, default=None,
                   help="forms to time (default: fp32 w8 w4 w4g32 on host/android, fp32 fp16 w8 on jetson; add "
                        "w4g64 w4g128 on host/android for plans that may use them)")
    t.add_argument("--rank-fractions", type=float, nargs="+", default=None,
                   help="pair ranks as fractions of the break-even rank in x out / (in + out) "
                        "(default 0.125 0.25 0.5 0.75 1; plus the multiple of 32 nearest to 0.5)")
    p.add_argument("--out", type=Path, default=None, metavar="TABLE.json",
                   help="also write the table here (--target jetson: the folder to write the cells to, required)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from ..files import check_output_file
    from ..backends.executorch.cost_profile import check_profile_args, make_timer, profile_costs
    from ..measure.costs import RANK_FRACTIONS, TARGET_FORMS
    from .args import check_count

    threads = args.threads or 1
    fractions = tuple(args.rank_fractions) if args.rank_fractions else RANK_FRACTIONS
    check_count(args.img_size, "--img-size", 1, 16_384, "input pixels")
    args.forms = tuple(args.forms or TARGET_FORMS[args.target])
    if args.target == "jetson":
        return run_jetson(args, fractions)
    args.iterations = 10 if args.iterations is None else args.iterations
    args.warmup = 3 if args.warmup is None else args.warmup
    check_profile_args(args.target, threads, args.rounds, args.iterations, args.warmup, tuple(args.forms), fractions)
    if args.out is not None:
        check_output_file(args.out, "--out", "table.json")
    timer = make_timer(args.target, threads, args.serial, args.adb, args.runner)  # the phone, before the model
    model = shapes_model(args)
    table = profile_costs(model, args.target, threads, args.rounds, args.iterations, args.warmup, tuple(args.forms),
                          fractions, out=args.out, progress=not args.quiet, model_name=args.model, timer=timer)
    print(summary(table, args.out), file=sys.stdout)
    return 0


def shapes_model(args: argparse.Namespace):
    """The model whose shapes are profiled: random weights (values do not change timings); the test bed's own."""
    from ..models import create_model

    return create_model(args.model, "auto" if args.model == "testbed" else "random", img_size=args.img_size,
                        progress=not args.quiet)


def run_jetson(args: argparse.Namespace, fractions) -> int:
    """`--target jetson`: write the cells (ONNX) and jetson/profile.py to the folder --out."""
    from ..backends.tensorrt.cost_bundle import RUN_COMMAND, check_forms, write_profile_bundle
    from ..errors import DeployError
    from ..files import check_output_dir
    from .args import check_count

    given = [f for f, v in (("--threads", args.threads), ("--serial", args.serial), ("--adb", args.adb),
                            ("--runner", args.runner), ("--warmup", args.warmup)) if v is not None]
    if given:
        raise DeployError(f"{', '.join(given)}: not for --target jetson (the GPU's engines are timed on the device by "
                          "`python3 jetson/profile.py`; its --warmup-ms sets the warm-up).")
    iterations = 200 if args.iterations is None else args.iterations
    check_count(args.rounds, "--rounds", 1, 1000, "interleaved rounds")
    check_count(iterations, "--iterations", 1, 1_000_000, "trtexec iterations")
    if args.out is None:
        raise DeployError("--target jetson needs --out DIR: the folder the cells and jetson/profile.py are written to "
                          "(then run `python3 jetson/profile.py` in it on the Jetson).")
    if args.out.suffix == ".json":
        raise DeployError(f"--out {args.out}: --target jetson writes a folder (the table is written on the Jetson, "
                          "into its results/); name a folder, e.g. --out cells_jetson/.")
    check_output_dir(args.out, "--out")
    check_forms(args.forms)
    model = shapes_model(args)
    prof = write_profile_bundle(model, args.out, args.model, args.forms, fractions, progress=not args.quiet,
                                rounds=args.rounds, iterations=iterations)
    n_onnx = len({c["onnx"] for c in prof["cells"]}) + len({w["onnx"] for w in prof["whole"].values()})
    mb = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file()) / 1e6
    print(f"jetson cells: {len(prof['shapes'])} shapes, {len(prof['cells'])} cells + {len(prof['whole'])} whole-model "
          f"engines to build ({n_onnx} ONNX files, forms {' '.join(prof['forms'])}; onnxruntime matches PyTorch "
          f"within {prof['onnxruntime_max_rel_err']:.2g}) -> {args.out} ({mb:.0f} MB)\n"
          f"next: copy {args.out} to the Jetson and run `{RUN_COMMAND}` there; then pass its results/cost_table.json "
          f"to `deploy compress --target jetson --cost-table`.")
    return 0


def summary(table, out) -> str:
    """A few lines: where the table went, and per shape the dense times and the measured break-even ranks."""
    from ..measure.costs import busy_note, cache_path

    lines = [f"cost table: {len(table.shapes)} shapes, {table.meta.get('cells')} programs, "
             f"{table.meta.get('profile_s')} s, {table.threads} thread(s), {table.cpu.get('model_name')}"]
    for s in table.shape_list():
        entry = table.shapes[s.key]["forms"]
        dense = ", ".join(f"{f} {c['dense']['median_ms']:.3f} ms" for f, c in entry.items())
        be = ", ".join(f"{f} {table.break_even_rank_measured(s, f) or '>' + str(max(c['ranks'], default=0))}"
                       for f, c in entry.items())
        lines.append(f"  {s.key}: dense {dense}; pair slower than dense from rank: {be} "
                     f"(parameter break-even {s.break_even_rank:.0f})")
    if table.whole:  # the whole dense model, and what runs outside the Linears (the latency planner adds it)
        whole = ", ".join(f"{f} {c['median_ms']:.3f} ms" for f, c in table.whole.items())
        rest = ", ".join(f"{f} {table.rest_ms(f):.3f} ms" for f in table.whole if table.rest_ms(f) is not None)
        lines.append(f"  whole model: {whole}; outside the encoder Linears: {rest or 'unknown'}")
    note = busy_note(table)
    if note:
        lines.append(note)
    lines.append(f"written: {out}" if out is not None else "written: (no --out)")
    where = cache_path(table.target, table.threads, table.shape_list(), table.protocol.get("forms", []), table.cpu,
                       table.versions)
    lines.append(f"cached: {where}")
    return "\n".join(lines)
