"""The README's Python walkthrough runs as written (a timm DeiT -> INT8 -> .pte + Jetson bundle -> host bench)."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def walkthrough() -> str:
    text = README.read_text()
    m = re.search(r"<!-- walkthrough -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md lost its <!-- walkthrough --> python block"
    return m.group(1)


def test_readme_walkthrough_runs(tmp_path, monkeypatch, one_thread, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(walkthrough(), "README.md walkthrough", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert re.search(r"\d+\.\d+ ms median on ", out)
    for d in ("out/deit-t-wads", "out/android", "out/jetson"):
        assert (tmp_path / d / "manifest.json").is_file()
    assert list((tmp_path / "out/android").glob("*_xnnpack_q8.pte"))
    assert list((tmp_path / "out/jetson").glob("*_qdq.onnx"))


def test_root_api_names():
    import lraqvit_deploy
    from lraqvit_deploy import bench, build, compress, create_model, quantize  # noqa: F401

    assert callable(compress) and callable(build) and callable(bench) and callable(quantize)
    for name in lraqvit_deploy.__all__:
        assert getattr(lraqvit_deploy, name) is not None
    with pytest.raises(AttributeError):
        lraqvit_deploy.no_such_name  # noqa: B018
