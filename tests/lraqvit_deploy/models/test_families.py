"""The family table: every supported family reduces to `vit_layout`'s slots with true fold sites; refusals say why."""
import copy

import pytest
import torch

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.models import ModelSpec, build_architecture, create_model
from lraqvit_deploy.models.families import FAMILIES, check_family, supported_list
from lraqvit_deploy.model_info import model_info, record

SUPPORTED = [f for f in FAMILIES if f.supported]
# variants beyond each family's example that take another path through the rewrites or the layout
VARIANTS = [
    ("eva02_base_patch16_clip_224", dict(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2)),  # attn.norm
    ("swinv2_cr_tiny_ns_224", dict(img_size=16, patch_size=2, window_size=4, embed_dim=16, depths=(1, 1),
                                   num_heads=(1, 2))),  # post-norm blocks, norm-first patch merging
]
CASES = [(f.example, f.tiny) for f in SUPPORTED] + VARIANTS


def _tiny(name, kwargs, seed=0):
    torch.manual_seed(seed)
    spec = ModelSpec(name, name, dict(kwargs, num_classes=10), "random")
    model = build_architecture(spec)
    with torch.no_grad():  # timm zero-inits biases and Swin V2's post-norms; perturb so every path carries signal
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    record(model, spec=spec)
    return model


@pytest.mark.parametrize("name,kwargs", CASES, ids=[c[0] for c in CASES])
def test_every_block_has_its_four_slots(name, kwargs):
    from lraqvit_deploy.vit_layout import check_replaceable, encoder_blocks, encoder_layers

    model = _tiny(name, kwargs)
    check_replaceable(model)
    blocks = encoder_blocks(model)
    roles = [t.role for t in encoder_layers(model)]
    assert blocks and sorted(roles) == sorted(["qkv", "proj", "fc1", "fc2"] * len(blocks))


# dense: every case; low rank (`up` fed by `down`'s rows, proj by v's rows of qkv.up): the rewritten families
FOLD_CASES = [(n, k, False) for n, k in CASES] + [(n, k, True) for n, k in CASES if n.startswith(("eva02", "swinv2_t"))]


@pytest.mark.parametrize("name,kwargs,low_rank", FOLD_CASES,
                         ids=[f"{n}-{'low-rank' if lr else 'dense'}" for n, _, lr in FOLD_CASES])
def test_fold_sites_keep_the_output(name, kwargs, low_rank):
    """A channel scale folded at every site the layout names leaves the FP32 output as it was (WADS §3.3).

    A wrong site (a LayerNorm that does not feed the Linear, as in a post-norm block) changes the output.
    """
    from conftest import low_rank as make_low_rank

    from lraqvit_deploy.quant.fold import find_targets, fold_scale

    model = _tiny(name, kwargs)
    if low_rank:
        make_low_rank(model)
    ref = copy.deepcopy(model)
    g = torch.Generator().manual_seed(2)
    targets = [t for t in find_targets(model) if t.foldable]
    assert targets
    for t in targets:
        fold_scale(t, torch.rand(t.linear.in_features, generator=g) * 1.5 + 0.25)
    x = torch.randn(2, *model.pretrained_cfg["input_size"], generator=g)
    with torch.no_grad():
        want, got = ref(x), model(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item()), (got - want).abs().max()


def test_post_norm_blocks_have_no_norm_fold_site():
    """Swin V2 computes x + norm1(attn(x)): norm1 does not feed qkv, so nothing may be folded into it."""
    from lraqvit_deploy.vit_layout import encoder_layers

    sites = {t.role: t.site.kind for t in encoder_layers(_tiny("swinv2_tiny_window8_256", check_family("swinv2_").tiny),
                                                         include_downsample=True)}
    assert sites == {"qkv": "none", "proj": "rows", "fc1": "none", "fc2": "none", "reduction": "none"}


@pytest.mark.parametrize("name,family", [("xcit_tiny_12_p16_224", "XCiT"), ("levit_128", "LeViT"),
                                         ("mobilevit_s", "MobileViT"), ("fastvit_t8", "FastViT")])
def test_refused_family_says_why_and_what_is_supported(name, family):
    with pytest.raises(DeployError) as e:
        create_model(name, "random")
    msg = str(e.value)
    assert "\n" not in msg and f"({family}) is not supported: " in msg and supported_list() in msg


def test_unknown_family_lists_the_supported():
    with pytest.raises(DeployError) as e:
        check_family("resnet50")
    assert "not a ViT-family" in str(e.value) and "CaiT (cait_)" in str(e.value)


def test_every_supported_example_is_a_timm_model_of_its_family():
    import timm

    for f in SUPPORTED:
        assert timm.is_model(f.example) and check_family(f.example) is f


def test_gflops_of_an_attention_pool_head():
    """SigLIP's pooling head feeds `latent.expand(B, ...)` (a view of a parameter, no grad_fn under no_grad) to
    `attn_pool.q`; torch's flop counter used to fail on it ("Expected gradient function to be set")."""
    from lraqvit_deploy.evaluate import count_gflops

    model = _tiny("vit_base_patch16_siglip_224", check_family("vit_").tiny)
    assert count_gflops(model) > 0
    assert all(p.requires_grad for p in model.parameters())  # restored afterwards


@pytest.mark.parametrize("name", ["eva02_tiny_patch14_224", "beit_base_patch16_224", "swinv2_tiny_window8_256"])
def test_distillation_and_wads_run_on_the_rewritten_attention(name, one_thread):
    """Block distillation trains the low-rank layers of a rewritten block, then WADS searches and folds channel
    scales at the sites `vit_layout` names (each site is checked exactly by test_fold_sites_keep_the_output):
    the INT8 model stays close to the distilled FP32 one."""
    from lraqvit_deploy import DistillConfig, LowRankConfig, Recipe, compress, quant_config, quantize

    model = _tiny(name, check_family(name).tiny)
    recipe = Recipe(low_rank=LowRankConfig("lra", param_reduction=0.3), distill=DistillConfig(steps=2, batch_size=4))
    report = compress(model, recipe, train_data="fashion-mnist:train", evaluate=False, progress=False)
    assert report.compression["distill"]["steps"] == 2
    fp32 = copy.deepcopy(report.model)
    int8 = quantize(report.model, quant_config("wads", wads_iters=4), calib_data="fashion-mnist:train", n_images=8)
    assert model_info(int8).quant["config"]["method"] == "wads"
    x = torch.randn(4, *model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want, got = fp32(x), int8(x)
    sqnr = 10 * torch.log10(want.pow(2).sum() / (got - want).pow(2).sum())
    assert sqnr > 20, sqnr  # 41-60 dB seen
