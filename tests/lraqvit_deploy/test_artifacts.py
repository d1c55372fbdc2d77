"""Atomic writes and model artifacts (save -> reload -> identical outputs)."""
import json

import pytest
import torch

from conftest import make_tiny
from lraqvit_deploy.artifacts import MANIFEST, MODEL_FILE, load_model_artifact, save_model_artifact
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.io import atomic_dir, atomic_write
from lraqvit_deploy.layers import LowRankLinear, QuantLinear


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_atomic_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "art"
    with atomic_dir(out) as d:
        (d / "a").write_text("1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out) as d:
            (d / "a").write_text("2")
            raise KeyboardInterrupt
    assert (out / "a").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    with atomic_dir(out) as d:
        (d / "b").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["b"]


def _compressed_tiny():
    model = make_tiny("vit")
    blk = model.blocks[0]
    blk.attn.qkv = LowRankLinear.from_linear(blk.attn.qkv, 16)
    blk.attn.qkv.down = QuantLinear.from_linear(blk.attn.qkv.down, "per_token_dynamic")
    q = QuantLinear.from_linear(blk.mlp.fc2, "per_tensor_static")
    q.act_scale = torch.tensor(0.05)
    q.input_scale = torch.rand(q.in_features) + 0.5
    blk.mlp.fc2 = q
    return model


def test_model_artifact_roundtrip(tmp_path):
    model = _compressed_tiny()
    save_model_artifact(tmp_path / "a", model, {"method": "test"})
    manifest = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert manifest["modules"]["blocks.0.attn.qkv"] == {"type": "low_rank_linear", "rank": 16}
    assert manifest["method"] == "test" and "torch" in manifest["versions"]
    loaded = load_model_artifact(tmp_path / "a")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert isinstance(loaded.blocks[0].attn.qkv.down, QuantLinear)


def test_corrupt_artifact_is_detected(tmp_path):
    save_model_artifact(tmp_path / "a", make_tiny("vit"))
    data = bytearray((tmp_path / "a" / MODEL_FILE).read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "a" / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(DeployError, match="corrupt"):
        load_model_artifact(tmp_path / "a")
    with pytest.raises(DeployError, match="not a model artifact"):
        load_model_artifact(tmp_path)
