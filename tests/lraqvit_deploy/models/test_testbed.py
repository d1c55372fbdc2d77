"""The offline test bed: ONNX -> timm conversion is exact, and the weights matter."""
import numpy as np
import pytest
import torch

from lraqvit_deploy.data import FashionMNIST, seeded_subset, stack_images
from lraqvit_deploy.models import dinov2_onnx, testbed
from lraqvit_deploy.model_info import model_info


@pytest.fixture(scope="module")
def real_images_224():
    cfg = {**testbed.data_config(testbed.TestbedConfig()), "input_size": (3, 224, 224)}
    ds = FashionMNIST("test", cfg)
    return stack_images(ds, range(3))


@pytest.mark.slow
def test_converted_timm_features_match_onnx_graph(real_images_224):
    """timm vit_small_patch14_dinov2 with converted weights == the ONNX backbone run in onnxruntime."""
    import onnx
    import onnxruntime as ort
    import timm

    path = dinov2_onnx.find_onnx()
    graph = onnx.load(str(path))
    graph.graph.output.append(onnx.helper.make_tensor_value_info(dinov2_onnx.BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run([dinov2_onnx.BACKBONE_OUTPUT], {sess.get_inputs()[0].name: real_images_224.numpy()})[0]

    model = timm.create_model(dinov2_onnx.TIMM_ARCH, pretrained=False, img_size=224, num_classes=0)
    model.load_state_dict(dinov2_onnx.convert(path, 224), strict=True)
    with torch.no_grad():
        out = model.eval().forward_features(real_images_224).numpy()
    assert out.shape == ref.shape == (3, 1 + 16 * 16, 384)
    np.testing.assert_allclose(out, ref, atol=1e-3, rtol=1e-3)
    assert sum(p.numel() for p in model.parameters()) > 21e6


def test_testbed_config_validation():
    from lraqvit_deploy.errors import DeployError

    with pytest.raises(DeployError, match="multiple of 14"):
        testbed.TestbedConfig(img_size=50)
    with pytest.raises(DeployError, match="unknown test bed profile"):
        testbed.get_profile("huge")
    with pytest.raises(DeployError, match="n_train must be in 1..50000"):  # the held-out images stay out
        testbed.TestbedConfig(n_train=60000)
    for bad in ({"lr": 0}, {"lr": float("nan")}, {"epochs": -1}, {"batch_size": 0}, {"warmup_frac": 2.0},
                {"weight_decay": True}):
        with pytest.raises(DeployError, match="test bed reference"):
            testbed.ReferenceConfig(**bad)
    with pytest.raises(DeployError, match="reference must be one of"):
        testbed.build(testbed.TestbedConfig(), reference="teacher")


def test_training_pool_and_held_out_images_are_disjoint():
    cfg = testbed.get_profile("full")
    pool = testbed.train_pool(cfg)
    assert max(pool.indices) < testbed.TRAIN_POOL <= min(testbed.HELD_OUT)
    assert len(testbed.held_out(cfg)) == 1000 and len(pool) == cfg.n_train


def test_reference_images_are_a_superset_draw_and_keep_old_cache_keys():
    import dataclasses
    import hashlib
    import json

    from lraqvit_deploy.errors import DeployError

    for bad in (0, -5, 50001, 2.5, True):
        with pytest.raises(DeployError, match="reference n_images"):
            testbed.ReferenceConfig(n_images=bad)
    cfg = testbed.TestbedConfig(n_train=300)
    more = dataclasses.replace(cfg, reference=testbed.ReferenceConfig(n_images=900))
    probe, ref = testbed.train_pool(cfg), testbed.reference_pool(more)
    assert len(ref) == 900 and set(probe.indices) < set(ref.indices) and max(ref.indices) < testbed.TRAIN_POOL
    assert testbed.reference_pool(cfg).indices == probe.indices  # None: the probe's images
    # n_images unset: the key of the references cached before it existed (no rebuild for anyone)
    fields = dataclasses.asdict(cfg)
    del fields["reference"]["n_images"]
    old = hashlib.sha256(json.dumps({"onnx": "x", "cfg": fields, "format": testbed._FORMAT, "stage": "converged"},
                                    sort_keys=True).encode()).hexdigest()[:16]
    assert testbed._cache_key("x", cfg, "converged") == old != testbed._cache_key("x", more, "converged")
    assert testbed._cache_key("x", cfg, "probe") == testbed._cache_key("x", more, "probe")


def test_reference_fine_tune_trains_every_parameter_and_lowers_the_loss():
    """The recipe on a 1-block ViT at 28 px: seeded (same losses twice), every weight moves, the loss falls."""
    import copy

    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=28, patch_size=14, num_classes=10,
                              depth=1, embed_dim=48, num_heads=2)
    cfg = testbed.TestbedConfig(img_size=28, n_train=256,
                                reference=testbed.ReferenceConfig(epochs=3, lr=1e-3, batch_size=32))
    before = copy.deepcopy(model)
    torch.set_num_threads(1)
    losses = testbed.fine_tune_reference(model, cfg, progress=False)
    again = testbed.fine_tune_reference(copy.deepcopy(before), cfg, progress=False)
    assert len(losses) == 3 * 256 // 32 and losses == again
    assert sum(losses[-8:]) < sum(losses[:8])
    moved = [n for (n, p), q in zip(model.named_parameters(), before.parameters()) if not torch.equal(p, q)]
    assert len(moved) == len(list(model.parameters()))
    assert not model.training


@pytest.mark.slow
def test_testbed_is_accurate_and_weights_matter(testbed_model):
    """Real weights score far above chance; the same architecture with random weights does not."""
    from lraqvit_deploy.evaluate import evaluate
    from lraqvit_deploy.models import build_architecture

    ds = seeded_subset(FashionMNIST("test", testbed_model.pretrained_cfg), 300, 0)
    real = evaluate(testbed_model, ds, progress=False)
    torch.manual_seed(0)
    rand = evaluate(build_architecture(model_info(testbed_model).spec), ds, progress=False)
    assert real.top1 > 75.0
    assert rand.top1 < 30.0
    assert real.params == 21_540_490


@pytest.mark.slow
def test_converged_reference_beats_the_probe_on_held_out_images(testbed_model):
    """The default test bed is the fine-tuned reference; the probe-only model stays loadable and is weaker."""
    from lraqvit_deploy.evaluate import evaluate
    from lraqvit_deploy.models import create_model

    assert model_info(testbed_model).spec.testbed_reference == "converged"
    probe = create_model("testbed", "probe", progress=False)
    assert model_info(probe).spec.testbed_reference == "probe" and "fine-tuned" not in model_info(probe).spec.weights
    ds = testbed.held_out(testbed.get_profile("quick"), 500)
    ref, pr = evaluate(testbed_model, ds, progress=False), evaluate(probe, ds, progress=False)
    d = ref.paired_with(pr)
    assert d.ci95_pt[0] > 0, f"converged {ref.top1:.1f} vs probe {pr.top1:.1f}: {d.cell()}"
