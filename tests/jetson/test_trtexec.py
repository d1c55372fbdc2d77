"""trtexec output parsing against real recorded logs (sources in tests/data/trtexec/README.md)."""
from pathlib import Path

import pytest

from lraqvit_deploy.jetson import trtexec

DATA = Path(__file__).parents[1] / "data" / "trtexec"


def read(name):
    return (DATA / name).read_text()


def test_xavier_trt84_summary():
    r = trtexec.parse_output(read("xavier_trt84_meta_tegra_952.txt"))
    assert r["tensorrt"] == "8.4.0" and r["passed"] is True
    assert r["throughput_qps"] == pytest.approx(41087.7)
    assert r["latency"] == {"min": 0.387207, "max": 0.447357, "mean": 0.402238, "median": 0.401947, "p99": 0.420288}
    assert r["gpu_compute"]["median"] == pytest.approx(0.388443)
    assert r["d2h"]["p99"] == pytest.approx(0.00488281)
    assert r["host_walltime_s"] == pytest.approx(3.00119)


def test_end_to_end_host_latency_section():
    r = trtexec.parse_output(read("xavier_nx_meta_tegra_1124.txt"))
    assert r["host_latency"]["mean"] == pytest.approx(0.586663)
    assert r["latency"]["median"] == pytest.approx(0.572998)
    assert r["tensorrt"] is None and r["passed"] is None  # this excerpt has no version line


def test_percentiles_90_95_99():
    r = trtexec.parse_output(read("percentiles_tensorrt_4177.txt"))
    lat = r["latency"]
    assert (lat["p90"], lat["p95"], lat["p99"]) == (10.2996, 10.8698, 12.9675)
    assert r["gpu_compute"]["p90"] == pytest.approx(10.2881)
    assert r["enqueue"]["max"] == pytest.approx(15.0201)


def test_trt10_version_encoding():
    assert trtexec.parse_output(read("header_trt10_tensorrt_4036.txt"))["tensorrt"] == "10.2.0"
    assert trtexec.decode_version(8502) == "8.5.2"
    assert trtexec.decode_version(100200) == "10.2.0"
    assert trtexec.decode_version(110400) == "11.4.0"


def test_no_summary_gives_empty_numbers():
    r = trtexec.parse_output("&&&& FAILED TensorRT.trtexec [TensorRT v8502] # trtexec --onnx=x.onnx")
    assert r["passed"] is False and r["tensorrt"] == "8.5.2" and "latency" not in r


def test_command_lines_follow_version():
    b85 = trtexec.build_command("trtexec", "m_qdq.onnx", "m.engine", "int8", "input:1x3x56x56", "t.cache", 8)
    assert "--int8" in b85 and "--fp16" in b85 and "--timingCacheFile=t.cache" in b85
    b11 = trtexec.build_command("trtexec", "m_qdq.onnx", "m.engine", "int8", "input:1x3x56x56", None, 11)
    assert "--int8" not in b11 and "--fp16" not in b11  # removed in 11: precision comes from the ONNX
    ln = ["/blocks/blocks.0/norm1/lraqvit_ln_fp32/ReduceMean", "/blocks/blocks.0/norm1/lraqvit_ln_fp32/Sub"]
    w = trtexec.build_command("trtexec", "m_qdq.onnx", "m.engine", "int8", "input:1x3x56x56", None, 8, fp32_layers=ln)
    spec = ",".join(f"{n}:fp32" for n in ln)
    assert f"--layerPrecisions={spec}" in w and f"--layerOutputTypes={spec}" in w and "--precisionConstraints=obey" in w
    s10 = trtexec.build_command("trtexec", "m_fp16.onnx", "m.engine", "fp16", "input:1x3x56x56", None, 10,
                                strongly_typed=True, fp32_layers=ln)
    assert "--stronglyTyped" in s10 and "--fp16" not in s10 and not any("layerPrecisions" in c for c in s10)
    t = trtexec.time_command("trtexec", "m.engine", trtexec.shapes_arg("input", (1, 3, 56, 56)), export_prefix="r")
    assert "--shapes=input:1x3x56x56" in t and "--percentile=50,90,99" in t and "--useCudaGraph" in t
