"""The offline test bed: ONNX -> timm conversion is exact, and the weights matter."""
import numpy as np
import pytest
import torch

from lraqvit_deploy.data import FashionMNIST, seeded_subset, stack_images
from lraqvit_deploy.models import dinov2_onnx, testbed


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


@pytest.mark.slow
def test_testbed_is_accurate_and_weights_matter(testbed_model):
    """Real weights score far above chance; the same architecture with random weights does not."""
    from lraqvit_deploy.evaluate import evaluate
    from lraqvit_deploy.models import build_architecture

    ds = seeded_subset(FashionMNIST("test", testbed_model.pretrained_cfg), 300, 0)
    real = evaluate(testbed_model, ds, progress=False)
    torch.manual_seed(0)
    rand = evaluate(build_architecture(testbed_model.lraqvit_spec), ds, progress=False)
    assert real.top1 > 75.0
    assert rand.top1 < 30.0
    assert real.params == 21_540_490
