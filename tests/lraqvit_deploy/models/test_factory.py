"""Weight sources of `create_model` and their errors."""
import pickle

import pytest
import torch

from lraqvit_deploy.errors import DeployError, WeightsNotFoundError
from lraqvit_deploy.options import OptionError
from lraqvit_deploy.models import create_model
from lraqvit_deploy.models.factory import timm_cache_file
from lraqvit_deploy.model_info import model_info

ARCH = "deit_tiny_patch16_224"
SMALL = dict(img_size=32)


def _reference(num_classes=1000):
    torch.manual_seed(1)
    return create_model(ARCH, "random", num_classes=num_classes, **SMALL)


def _same(a, b):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-6)


def test_random_weights_are_explicit():
    model = create_model(ARCH, "random", **SMALL)
    assert model_info(model).spec.weights == "random"
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    ref = _reference()
    path = tmp_path / "w.safetensors"
    save_file(ref.state_dict(), str(path))
    model = create_model(ARCH, str(path), **SMALL)
    assert _same(ref, model)
    assert model_info(model).spec.weights.startswith("file:")


def test_pth_file_with_nested_state_dict(tmp_path):
    ref = _reference()
    path = tmp_path / "w.pth"
    torch.save({"model": ref.state_dict(), "epoch": 3}, path)
    assert _same(ref, create_model(ARCH, str(path), **SMALL))


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled arbitrary code",))


def test_pth_with_arbitrary_objects_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    with pytest.raises(DeployError, match="weights_only"):
        create_model(ARCH, str(path), **SMALL)
    assert "unpickled arbitrary code" not in capsys.readouterr().out


def test_missing_file_lists_options(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="'random' weights") as e:
        create_model(ARCH, str(tmp_path / "nope.safetensors"), **SMALL)
    assert isinstance(e.value, OptionError) and e.value.field == "weights"  # the CLI names --weights
    assert "--" not in str(e.value)  # a library error names no CLI flag


def test_unknown_suffix():
    with pytest.raises(DeployError, match="expected 'auto'"):
        create_model(ARCH, "weights.h5", **SMALL)


def test_auto_without_cache_never_goes_random(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf"))
    torch.hub.set_dir(str(tmp_path / "torchhub"))
    with pytest.raises(WeightsNotFoundError) as e:
        create_model(ARCH, **SMALL)
    msg = str(e.value)
    for option in ("PATH.safetensors", "'random' weights", "timm.create_model", "the model 'testbed'"):
        assert option in msg
    assert msg.startswith("weights = 'auto': no weights found")


def test_timm_hf_cache_is_used_offline(tmp_path, monkeypatch):
    """A file laid out exactly as huggingface_hub caches it is found and loaded."""
    import huggingface_hub.constants as hc
    from safetensors.torch import save_file

    ref = _reference()
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--timm--deit_tiny_patch16_224.fb_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file(ref.state_dict(), str(repo / "snapshots" / "abc123" / "model.safetensors"))
    torch.hub.set_dir(str(tmp_path / "torchhub"))
    assert timm_cache_file(ARCH) is not None
    model = create_model(ARCH, "timm-cache", **SMALL)
    assert "timm cache" in model_info(model).spec.weights
    assert _same(ref, model)


def test_timm_torch_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    ref = _reference()
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf"))
    torch.hub.set_dir(str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    torch.save({"model": ref.state_dict()}, tmp_path / "checkpoints" / "deit_tiny_patch16_224-a1311bcf.pth")
    assert _same(ref, create_model(ARCH, **SMALL))


def test_class_count_mismatch_says_how_to_fix(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(_reference(num_classes=10).state_dict(), str(path))
    with pytest.raises(OptionError, match="num_classes = 1000: .* has 10 classes; set 10") as e:
        create_model(ARCH, str(path), **SMALL)
    assert e.value.field == "num_classes"
    assert create_model(ARCH, str(path), num_classes=10, **SMALL)(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_wrong_architecture_checkpoint(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(create_model("vit_small_patch16_224", "random", img_size=32).state_dict(), str(path))
    with pytest.raises(DeployError, match="does not fit"):
        create_model(ARCH, str(path), **SMALL)


@pytest.mark.parametrize("name,match", [("resnet50", "not a ViT-family"), ("vit_nonexistent_xyz", "timm has no model")])
def test_bad_model_names(name, match):
    with pytest.raises(DeployError, match=match):
        create_model(name, "random")


def test_testbed_refuses_other_weights():
    with pytest.raises(DeployError, match="brings its own weights"):
        create_model("testbed", "random")


def test_random_weights_are_recognised_for_the_gates():
    from lraqvit_deploy.models import has_random_weights

    assert has_random_weights(create_model("deit_tiny_patch16_224", "random", num_classes=10, img_size=32))
    assert not has_random_weights(torch.nn.Linear(2, 2))  # no spec: not known to be random


def test_testbed_weights_name_the_reference():
    with pytest.raises(DeployError, match="'auto' \\(the converged reference\\) or 'probe'"):
        create_model("testbed", "timm-cache")


def test_deit3_is_a_vit_family_model():
    """DeiT III (timm's VisionTransformer with LayerScale) is named deit3_*, not deit_*."""
    m = create_model("deit3_small_patch16_224", "random", num_classes=10, img_size=32)
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("kw, field", [({"img_size": 0}, "img_size"), ({"num_classes": True}, "num_classes"),
                                       ({"weights": 3}, "weights"), ({"testbed_profile": "huge"}, "testbed_profile")])
def test_bad_model_options_name_the_field_not_a_flag(kw, field):
    """create_model's choices are `ModelOptions`: a bad one names its field; the CLI writes it as the flag."""
    from lraqvit_deploy.cli.args import flag_error

    kw = {"weights": "random", **kw}
    with pytest.raises(OptionError) as e:
        create_model(ARCH, **kw)
    assert e.value.field == field and str(e.value).startswith(f"{field} = ") and "--" not in str(e.value)
    assert flag_error(e.value).startswith("--" + field.replace("_", "-") + " ")
