"""`deploy bench --target jetson`: collecting a device result; the on-device scripts run without torch."""
import importlib.util
import json
import pytest

from lraqvit_deploy.benchmark import BenchResult, summarize
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.jetson.bench import JetsonBenchOptions, bench

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _result(tmp_path, precision="int8"):
    r = BenchResult(target="jetson", artifact=f"engines/m_{precision}.engine", device="NVIDIA Jetson AGX Xavier, "
                    "nvpmodel MAXN", iterations=5, warmup=1, threads=None, **summarize([1.0, 1.2, 1.1, 1.3, 1.0]),
                    extra={"precision": precision})
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / f"{precision}.json").write_text(json.dumps(r.to_dict()))
    return r


@pytest.mark.skipif(HAS_TRT, reason="tensorrt imports here, so bench runs the engine instead of collecting")
def test_collects_device_result(tmp_path):
    want = _result(tmp_path)
    got = bench(tmp_path, JetsonBenchOptions(precision="int8", iterations=5, warmup=1))
    assert got == want
    assert bench(tmp_path / "results" / "int8.json", JetsonBenchOptions(precision="fp16")) == want


@pytest.mark.skipif(HAS_TRT, reason="tensorrt imports here")
def test_missing_result_says_what_to_run(tmp_path):
    with pytest.raises(DeployError, match="python3 jetson/run.py --precisions fp16"):
        bench(tmp_path, JetsonBenchOptions(precision="fp16"))


def test_rejects_foreign_json(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"schema": "other", "target": "android"}))
    with pytest.raises(DeployError, match="not a jetson bench result"):
        bench(tmp_path / "x.json", JetsonBenchOptions())


def test_bench_cli_registers_jetson_options():
    from lraqvit_deploy.cli.main import build_parser

    from lraqvit_deploy.cli.args import options_from_args

    args = build_parser().parse_args(["bench", "--target", "jetson", "out", "--jetson-precision", "fp16"])
    assert options_from_args(JetsonBenchOptions, args, shared=("iterations", "warmup")).precision == "fp16"


@pytest.mark.skipif(HAS_TRT, reason="tensorrt imports here")
def test_a_result_that_failed_its_gates_is_refused(tmp_path):
    """jetson/run.py writes the file of an engine that failed its output gates (exit 2); it is no latency."""
    from lraqvit_deploy.errors import ToleranceError
    from lraqvit_deploy.jetson import run

    r = _result(tmp_path)
    ok = dict(r.to_dict(), extra={"precision": "int8", "verification": {"passed": True, "failed": []}})
    run._write_json(str(tmp_path / "results" / "int8.json"), ok)
    assert bench(tmp_path, JetsonBenchOptions()).median_ms == r.median_ms  # the control
    failed = dict(ok, extra={"precision": "int8", "verification": {
        "passed": False, "sqnr_db": float("nan"), "failed": ["NaN/inf logits on 32 of 32 images"]}})
    run._write_json(str(tmp_path / "results" / "int8.json"), failed)
    data = json.loads((tmp_path / "results" / "int8.json").read_text())  # strict JSON: NaN written as null
    assert data["extra"]["verification"]["sqnr_db"] is None
    with pytest.raises(ToleranceError, match=r"int8.json: the engine failed its output gates on the device "
                                             r"\(NaN/inf logits on 32 of 32 images\); its timing is not a latency"):
        bench(tmp_path, JetsonBenchOptions())
    with pytest.raises(ToleranceError, match="failed its output gates"):
        bench(tmp_path / "results" / "int8.json", JetsonBenchOptions())


@pytest.mark.skipif(HAS_TRT, reason="tensorrt imports here")
def test_a_latency_plans_prediction_is_shown_beside_the_device_median(tmp_path):
    from lraqvit_deploy.cli.bench import predicted_line

    _result(tmp_path)
    manifest = {"format": "x", "target": "jetson", "latency_budget_ms": 2.0, "predicted_latency_ms": 1.0,
                "latency_prediction": {"cost_table": "jetson_table.json", "threads": 1, "table_target": "jetson"}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    got = bench(tmp_path, JetsonBenchOptions(precision="int8"))
    assert got.extra["predicted"]["predicted_latency_ms"] == 1.0
    line = predicted_line(got)
    assert "predicted    1 ms (jetson_table.json" in line and "measured / predicted 1.100" in line
    # the FP16 baseline engine is not what the plan predicts
    (tmp_path / "results" / "fp16.json").write_text((tmp_path / "results" / "int8.json").read_text()
                                                    .replace('"int8"', '"fp16"'))
    assert "predicted" not in bench(tmp_path, JetsonBenchOptions(precision="fp16")).extra
    (tmp_path / "manifest.json").write_text("{broken")  # a broken manifest only loses the comparison
    assert "predicted" not in bench(tmp_path, JetsonBenchOptions(precision="int8")).extra
