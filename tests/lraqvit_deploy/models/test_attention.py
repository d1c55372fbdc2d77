"""EVA-02, BEiT and Swin V2 rewritten to a real `qkv` Linear (and EVA-02's SwiGLU to one `fc1`): same FP32 numbers."""
import copy

import pytest
import torch
import torch.nn as nn

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.models import ModelSpec, build_architecture, create_model
from lraqvit_deploy.models.attention import fold_qkv_bias_, has_separate_qkv_bias
from lraqvit_deploy.models.swiglu import pack_swiglu_

_VIT = dict(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2)
_SWIN = dict(img_size=16, patch_size=2, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2))
# (timm name, tiny kwargs, attention modules rewritten, SwiGLUs packed)
REWRITTEN = [
    ("eva02_tiny_patch14_224", dict(_VIT, img_size=14, patch_size=7), 2, 0),   # RoPE, packed SwiGLU (GluMlp)
    ("eva02_base_patch14_224", dict(_VIT, img_size=14, patch_size=7), 2, 2),   # q/k/v_proj, two-Linear SwiGLU
    ("beit_base_patch16_224", _VIT, 2, 0),                                     # relative position bias
    ("beitv2_base_patch16_224", _VIT, 2, 0),
    ("swinv2_tiny_window8_256", _SWIN, 2, 0),                                  # cosine attention, log-spaced CPB
]


def _timm_model(name, kwargs, seed=0):
    """The model in timm's own layout with every parameter perturbed (timm zero-inits q/v biases and Swin V2's
    post-norms, which would hide a wrong rewrite)."""
    torch.manual_seed(seed)
    model = build_architecture(ModelSpec(name, name, dict(kwargs, num_classes=10)), timm_layout=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def _x(model, n=3):
    return torch.randn(n, *model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name,kwargs,n_attn,n_mlp", REWRITTEN, ids=[r[0] for r in REWRITTEN])
def test_rewrite_is_exact_in_fp32(name, kwargs, n_attn, n_mlp):
    ref = _timm_model(name, kwargs)
    model = copy.deepcopy(ref)
    assert len(fold_qkv_bias_(model)) == n_attn
    assert len(pack_swiglu_(model)) == n_mlp
    x = _x(model)
    with torch.no_grad():
        want, got = ref(x), model(x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item()), (got - want).abs().max()
    for attn in (m for m in model.modules() if hasattr(m, "qkv")):
        assert not has_separate_qkv_bias(attn) and type(attn.qkv) is nn.Linear and attn.qkv.bias is not None
    assert not [k for k in model.state_dict() if k.endswith(("q_bias", "v_bias", "fc1_g.weight", "q_proj.weight"))]


def test_folded_bias_is_q_zero_v():
    ref = _timm_model("beit_base_patch16_224", _VIT)
    attn = ref.blocks[0].attn
    q, v = attn.q_bias.detach().clone(), attn.v_bias.detach().clone()
    fold_qkv_bias_(ref)
    assert torch.equal(attn.qkv.bias, torch.cat((q, torch.zeros_like(q), v)))


def test_timm_checkpoint_loads_then_rewrites(tmp_path):
    """A checkpoint in timm's layout (q_bias, v_bias) loads through timm's filter, then the model is rewritten."""
    from safetensors.torch import save_file

    name = "eva02_tiny_patch14_224"  # the smallest full-depth model of the three (5.5 M parameters)
    ref = _timm_model(name, dict(img_size=28))
    path = tmp_path / "eva02.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = create_model(name, str(path), num_classes=10, img_size=28)
    assert "blocks.0.attn.qkv.bias" in model.state_dict() and "blocks.0.attn.q_bias" not in model.state_dict()
    x = _x(ref)
    with torch.no_grad():
        want = ref(x)
        assert torch.allclose(model(x), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_rewritten_models_fit_their_own_rebuild():
    """An artifact is rebuilt with `build_architecture(spec)` (rewritten): the saved state dict must fit it."""
    for name, kwargs, _, _ in REWRITTEN:
        spec = ModelSpec(name, name, dict(kwargs, num_classes=10))
        a, b = build_architecture(spec), build_architecture(spec)
        b.load_state_dict(a.state_dict(), strict=True)


def test_unknown_separate_bias_attention_is_refused():
    """A block whose attention keeps q/v biases and has no rewrite is refused in one line, naming the supported."""
    from lraqvit_deploy.vit_layout import check_replaceable

    model = build_architecture(ModelSpec("deit_tiny_patch16_224", "deit_tiny_patch16_224", dict(_VIT, num_classes=10)))
    model.blocks[0].attn.q_bias = nn.Parameter(torch.zeros(32))
    with pytest.raises(DeployError) as e:
        check_replaceable(model)
    msg = str(e.value)
    assert "\n" not in msg and "blocks.0.attn" in msg and "Swin V2 (swinv2_)" in msg


def test_separate_q_k_v_projections_left_unstacked_are_refused():
    """Without a qkv slot the block's attention would silently stay dense (e.g. timm's grouped-query `vit_*_sapiens2`)."""
    from lraqvit_deploy.vit_layout import check_replaceable

    model = _timm_model("eva02_base_patch14_224", dict(_VIT, img_size=14, patch_size=7))  # timm layout: q/k/v_proj
    with pytest.raises(DeployError, match="separate Linears .* no qkv slot"):
        check_replaceable(model)
    fold_qkv_bias_(model)
    check_replaceable(model)
