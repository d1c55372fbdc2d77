"""The Jetson cost table (issue 26, item 1): cells written here, built and timed by trtexec on the device.

No TensorRT runs here, so the device half runs against a stand-in `trtexec` (below): a script that takes
trtexec's command lines, records the build flags it was given into the "engine" file, and for a timing
run times the cell's ONNX in onnxruntime and prints trtexec's performance summary in the format of the
recorded real logs (tests/data/trtexec). Everything else is real: the cell ONNX files (checked in
onnxruntime against PyTorch when written), the command lines, the log parser, the interleaved rounds,
the table the host reads and a latency plan for --target jetson made from it.
"""
from __future__ import annotations

import json
import stat
import sys

import pytest

pytest.importorskip("onnxruntime")

from lraqvit_deploy.jetson import profile as jprofile  # noqa: E402

FAKE_TRTEXEC = '''#!{python}
"""Stand-in for trtexec (tests only): builds record their flags; timings run the ONNX in onnxruntime."""
import json, statistics, sys, time
argv = sys.argv[1:]
opts = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in argv)
print("&&&& RUNNING TensorRT.trtexec [TensorRT v8502] # trtexec " + " ".join(argv))
if "help" in opts:
    sys.exit(0)
if "saveEngine" in opts:
    json.dump({{"onnx": opts["onnx"], "argv": argv}}, open(opts["saveEngine"], "w"))
elif "loadEngine" in opts:
    import numpy as np, onnxruntime as ort
    onnx = json.load(open(opts["loadEngine"]))["onnx"]
    name, dims = opts["shapes"].split(":")
    x = np.random.rand(*[int(d) for d in dims.split("x")]).astype(np.float32)
    so = ort.SessionOptions(); so.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])
    times = []
    for _ in range(int(opts["iterations"])):
        t = time.perf_counter(); sess.run(None, {{name: x}}); times.append((time.perf_counter() - t) * 1e3)
    s = "min = {{:.6f}} ms, max = {{:.6f}} ms, mean = {{:.6f}} ms, median = {{:.6f}} ms, percentile(99%) = {{:.6f}} ms"
    print("[12/07/2026-06:00:00] [I] === Performance summary ===")
    print("[12/07/2026-06:00:00] [I] Throughput: 100 qps")
    print("[12/07/2026-06:00:00] [I] Latency: " + s.format(min(times), max(times), statistics.mean(times),
          statistics.median(times), max(times)))
print("&&&& PASSED TensorRT.trtexec [TensorRT v8502] # trtexec " + " ".join(argv))
'''


@pytest.fixture
def fake_trtexec(tmp_path):
    path = tmp_path / "bin" / "trtexec"
    path.parent.mkdir()
    path.write_text(FAKE_TRTEXEC.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """`deploy profile --target jetson` of deit_tiny at 32 px (5 tokens), written once."""
    from lraqvit_deploy.cli.main import main

    out = tmp_path_factory.mktemp("jetson") / "cells"
    rc = main(["profile", "--target", "jetson", "--model", "deit_tiny_patch16_224", "--img-size", "32", "--quiet",
               "--rank-fractions", "0.25", "1", "--rounds", "1", "--iterations", "2", "--out", str(out)])
    assert rc == 0
    return out


def test_the_bundle_holds_every_cell_and_the_device_script(bundle):
    from lraqvit_deploy.measure.costs import model_shapes, rank_grid
    from lraqvit_deploy.models import create_model

    prof = json.loads((bundle / "jetson" / "profile.json").read_text())
    model = create_model("deit_tiny_patch16_224", "random", img_size=32, progress=False)
    shapes = model_shapes(model)
    assert set(prof["shapes"]) == {s.key for s in shapes} and prof["forms"] == ["fp32", "fp16", "w8"]
    for s in shapes:  # dense + every grid rank, per form
        for form in prof["forms"]:
            ranks = [c["rank"] for c in prof["cells"] if c["shape"] == s.key and c["form"] == form]
            assert ranks == [None, *rank_grid(s, "w8" if form == "w8" else "fp32", prof["rank_fractions"])]
    for c in prof["cells"] + list(prof["whole"].values()):
        assert (bundle / c["onnx"]).is_file(), c
    assert prof["whole"]["w8"]["layernorm_nodes"] and prof["onnxruntime_max_rel_err"] < 2e-2
    assert prof["defaults"] == {"rounds": 1, "iterations": 2}  # the device script's defaults
    for f in ("profile.py", "trtexec.py", "engine.py", "clocks.py", "rounds.py"):
        assert (bundle / "jetson" / f).is_file()


def test_int8_cells_are_qdq_like_the_model_export(bundle):
    import onnx

    prof = json.loads((bundle / "jetson" / "profile.json").read_text())
    pair = next(c for c in prof["cells"] if c["form"] == "w8" and c["rank"] is not None)
    ops = [n.op_type for n in onnx.load(str(bundle / pair["onnx"])).graph.node]
    assert ops.count("MatMul") == 2 and ops.count("QuantizeLinear") == 2 and ops.count("DequantizeLinear") == 4
    dense = next(c for c in prof["cells"] if c["form"] == "fp32" and c["rank"] is None)
    assert [n.op_type for n in onnx.load(str(bundle / dense["onnx"])).graph.node] == ["MatMul", "Add"]


def test_device_script_builds_times_and_writes_a_table_the_host_plans_with(bundle, fake_trtexec, tmp_path, capsys):
    import shutil

    from lraqvit_deploy.cli.main import main
    from lraqvit_deploy.measure.costs import CostTable

    work = tmp_path / "device"
    shutil.copytree(bundle, work)
    rc = jprofile.main([str(work), "--trtexec", fake_trtexec, "--rounds", "2", "--iterations", "3", "--warmup-ms", "0"])
    assert rc == 0, capsys.readouterr()
    table = CostTable.load(work / "results" / "cost_table.json")
    prof = json.loads((work / "jetson" / "profile.json").read_text())
    assert table.target == "jetson" and table.versions["tensorrt"] == "8.5.2" and table.protocol["rounds"] == 2
    assert set(table.shapes) == set(prof["shapes"]) and set(table.whole) == {"fp32", "fp16", "w8"}
    for key, entry in table.shapes.items():
        assert set(entry["forms"]) == {"fp32", "fp16", "w8"}
        for form, cell in entry["forms"].items():
            assert cell["dense"]["median_ms"] > 0 and cell["ranks"] and all(
                cell["pairs"][str(r)]["min_ms"] <= cell["pairs"][str(r)]["median_ms"] for r in cell["ranks"])
    assert table.rest_ms("w8") is not None and table.rest_ms("fp32") is not None
    for entry in table.shapes.values():  # ratios are to the same shape's dense FP32 cell, round by round
        assert entry["forms"]["fp32"]["dense"]["fp32_ratio"] == 1.0
        assert all(c["dense"]["fp32_ratio"] > 0 for c in entry["forms"].values())
    # the build flags each engine was given (the stand-in kept them): engine.precision_plan on 8.5
    engines = {p.name: json.loads(p.read_text()) for p in (work / "engines").glob("*.engine")}
    assert len(engines) == len(prof["cells"]) + len(prof["whole"])
    for c in prof["cells"] + list(prof["whole"].values()):
        rec = engines[jprofile.engine_name(c["name"])]
        assert rec["onnx"].endswith(c["onnx"])
        assert ("--int8" in rec["argv"]) == (c["form"] == "w8") and ("--fp16" in rec["argv"]) == (c["form"] != "fp32")
    whole_w8 = engines[jprofile.engine_name("whole/w8")]["argv"]
    assert "--precisionConstraints=obey" in whole_w8 and any(a.startswith("--layerPrecisions=") for a in whole_w8)

    # the host plans a Jetson model with it: the prediction comes from the Jetson's table
    path = work / "results" / "cost_table.json"
    rc = main(["compress", "--model", "deit_tiny_patch16_224", "--weights", "random", "--img-size", "32", "--quiet",
               "--num-classes", "10", "--target", "jetson", "--cost-table", str(path), "--latency-budget-ms", "1000",
               "--alloc-calib-data", "fashion-mnist:train", "--alloc-calib-images", "8", "--out", str(tmp_path / "c"),
               "--json", str(tmp_path / "r.json")])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["target"] == "jetson" and report["cost_table"] == str(path) and 0 < report["predicted_latency_ms"]
    # ... and its Jetson bundle's manifest carries the prediction (`deploy bench --target jetson` prints it beside)
    assert main(["build", "--target", "jetson", str(tmp_path / "c"), "--out", str(tmp_path / "b"), "--quiet",
                 "--calib-data", "fashion-mnist:train"]) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["predicted_latency_ms"] == report["predicted_latency_ms"]
    assert manifest["latency_prediction"]["table_target"] == "jetson"
    # a Jetson's table never prices a CPU program, and a Jetson plan needs one (one line each, before any data)
    common = ["compress", "--model", "deit_tiny_patch16_224", "--weights", "random", "--img-size", "32", "--quiet",
              "--latency-budget-ms", "1000", "--out", str(tmp_path / "x")]
    assert main([*common, "--target", "android", "--cost-table", str(path)]) != 0
    assert "a jetson table" in capsys.readouterr().err
    assert main([*common, "--target", "jetson"]) != 0
    err = capsys.readouterr().err
    assert "the Jetson's own cost table" in err and "Traceback" not in err and not (tmp_path / "x").exists()

    # a second run reuses the engines (nothing rebuilt) and rewrites the table
    before = {p: p.stat().st_mtime_ns for p in (work / "engines").glob("*.engine")}
    assert jprofile.main([str(work), "--trtexec", fake_trtexec, "--rounds", "1", "--iterations", "2",
                          "--forms", "w8"]) == 0
    assert before == {p: p.stat().st_mtime_ns for p in (work / "engines").glob("*.engine")}
    assert set(CostTable.load(work / "results" / "cost_table.json").whole) == {"w8"}


def test_device_script_errors_are_one_line(tmp_path, fake_trtexec, bundle, capsys):
    assert jprofile.main([str(tmp_path), "--trtexec", fake_trtexec]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "deploy profile --target jetson" in err and len(err.splitlines()) == 1
    assert jprofile.main([str(bundle), "--trtexec", str(tmp_path / "nope")]) == 2
    assert "trtexec not found" in capsys.readouterr().err
    assert jprofile.main([str(bundle), "--trtexec", fake_trtexec, "--forms", "w4"]) == 2
    assert "this bundle has fp32, fp16, w8" in capsys.readouterr().err
    assert jprofile.main([str(bundle), "--rounds", "0"]) == 2
    capsys.readouterr()


def test_tampered_bundles_and_interrupted_builds(bundle, fake_trtexec, tmp_path, capsys):
    import shutil

    work = tmp_path / "d"
    shutil.copytree(bundle, work)
    prof_path = work / "jetson" / "profile.json"
    prof = json.loads(prof_path.read_text())
    for broken, words in [("{trunc", "not JSON"), (json.dumps({**prof, "cells": [{"name": "x"}]}), "an entry lacks"),
                          (json.dumps({**prof, "target": "android"}), "not a Jetson cost-table bundle")]:
        prof_path.write_text(broken)
        assert jprofile.main([str(work), "--trtexec", fake_trtexec]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err
    prof_path.write_text(json.dumps(prof))
    (work / prof["cells"][0]["onnx"]).unlink()
    assert jprofile.main([str(work), "--trtexec", fake_trtexec]) == 2
    assert "missing from the bundle" in capsys.readouterr().err
    shutil.copy(bundle / prof["cells"][0]["onnx"], work / prof["cells"][0]["onnx"])
    # a build that dies half-way leaves no engine a later run would take for a built one
    engines = work / "engines"
    engines.mkdir()
    cell = prof["cells"][0]
    (engines / (jprofile.engine_name(cell["name"]) + ".partial123")).write_text("half an engine")

    def dying(cmd, log=None, timeout=3600):
        raise RuntimeError("trtexec failed (-9): killed")
    with pytest.raises(jprofile.ProfileError, match="could not build its engine"):
        jprofile.build_cell(fake_trtexec, str(work), cell, "8.5.2", str(engines), False, None, dying)
    assert not (engines / jprofile.engine_name(cell["name"])).exists()


@pytest.mark.parametrize("extra, words", [
    ([], "--target jetson needs --out DIR"),
    (["--out", "t.json"], "writes a folder"),
    (["--out", "d", "--forms", "w4"], "the Jetson's forms are fp32, fp16, w8"),
    (["--out", "d", "--threads", "2", "--serial", "X"], "--threads, --serial: not for --target jetson"),
    (["--out", "d", "--rounds", "0"], "--rounds 0: must be a whole number in 1..1,000"),
])
def test_host_cli_bad_input_is_one_line(tmp_path, monkeypatch, capsys, extra, words):
    from lraqvit_deploy.cli.main import main

    monkeypatch.chdir(tmp_path)
    rc = main(["profile", "--target", "jetson", "--model", "deit_tiny_patch16_224", "--img-size", "32", *extra])
    err = capsys.readouterr().err
    assert rc != 0 and words in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_trt_version_from_the_banner_or_the_header(tmp_path, fake_trtexec):
    assert jprofile.trt_version(fake_trtexec) == "8.5.2"
    assert jprofile.trt_version(fake_trtexec, "10.3.0") == "10.3.0"
    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\nexit 1\n")
    silent.chmod(0o755)
    header = tmp_path / "NvInferVersion.h"
    header.write_text("#define NV_TENSORRT_MAJOR 8 //!< major\n#define NV_TENSORRT_MINOR 5\n#define NV_TENSORRT_PATCH 2\n")
    assert jprofile.trt_version(str(silent), headers=[str(header)]) == "8.5.2"
    with pytest.raises(jprofile.ProfileError, match="--trt-version"):
        jprofile.trt_version(str(silent), headers=[str(tmp_path / "none.h")])


def test_strongly_typed_fp16_cells_are_skipped_not_faked(bundle, fake_trtexec, tmp_path):
    import shutil

    work = tmp_path / "d"
    shutil.copytree(bundle, work)
    table = jprofile.profile(str(work), fake_trtexec, "11.0.0", rounds=1, iterations=2, warmup_ms=0,
                             say=lambda s: None)
    assert table["meta"]["skipped"] and all("/fp16" in n for n in table["meta"]["skipped"])
    assert all("fp16" not in e["forms"] for e in table["shapes"].values()) and "fp16" not in table["whole_ms"]


def test_the_bundled_script_runs_standalone_without_site_packages(bundle, fake_trtexec, tmp_path):
    """On a bare JetPack: python3 -S (no site-packages: no torch, numpy or lraqvit_deploy) runs jetson/profile.py."""
    import shutil
    import subprocess

    work = tmp_path / "d"
    shutil.copytree(bundle, work)
    out = subprocess.run([sys.executable, "-S", str(work / "jetson" / "profile.py"), "--help"], capture_output=True,
                         text=True, cwd=tmp_path)
    assert out.returncode == 0 and "interleaved rounds" in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-S", str(work / "jetson" / "profile.py"), "--trtexec", fake_trtexec,
                          "--forms", "w8"], capture_output=True, text=True, cwd=work)
    assert out.returncode == 0 and (work / "results" / "cost_table.json").is_file(), out.stderr
    protocol = json.loads((work / "results" / "cost_table.json").read_text())["protocol"]
    assert (protocol["rounds"], protocol["iterations"]) == (1, 2)  # the bundle's defaults (deploy profile --rounds)
