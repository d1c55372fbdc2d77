"""Dataset readers and calibration subsets."""
import gzip
import struct

import numpy as np
import pytest
import torch

from lraqvit_deploy.data import FashionMNIST, calibration_batch, load_dataset, seeded_subset
from lraqvit_deploy.errors import DeployError

CFG = {"input_size": (3, 56, 56), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "interpolation": "bilinear",
       "crop_pct": 1.0, "crop_mode": "center"}


def _write_idx(path, arr, gz):
    header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reader_on_crafted_idx(tmp_path, gz):
    images = np.zeros((4, 28, 28), np.uint8)
    images[1] = 255
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images, gz)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([3, 1, 4, 1]), gz)
    ds = FashionMNIST("test", CFG, root=tmp_path)
    assert len(ds) == 4
    x, y = ds[1]
    assert x.shape == (3, 56, 56) and y == 1
    assert torch.allclose(x, torch.full_like(x, (1 - 0.5) / 0.25))  # white image, normalised
    assert torch.allclose(ds[0][0], torch.full_like(x, -2.0))


def test_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(DeployError, match="apt-get install -y dataset-fashion-mnist"):
        FashionMNIST("test", CFG, root=tmp_path)


def test_real_fashion_mnist():
    ds = load_dataset("fashion-mnist:test", CFG)
    assert len(ds) == 10000
    labels = ds.labels.tolist()
    assert sorted(set(labels)) == list(range(10))
    assert len(load_dataset("fashion-mnist:train", CFG)) == 60000


def test_seeded_subset_and_calibration_are_deterministic():
    ds = load_dataset("fashion-mnist:test", CFG)
    a, b = seeded_subset(ds, 50, seed=3), seeded_subset(ds, 50, seed=3)
    assert a.indices == b.indices and len(set(a.indices)) == 50
    assert seeded_subset(ds, 50, seed=4).indices != a.indices
    calib = calibration_batch(ds, 8, seed=1)
    assert calib.shape == (8, 3, 56, 56)
    assert torch.equal(calib, calibration_batch(ds, 8, seed=1))


def test_image_folder(tmp_path):
    from PIL import Image

    for cls, colour in (("n01440764", (255, 0, 0)), ("n01443537", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (80, 60), colour).save(tmp_path / cls / f"{i}.JPEG")
    ds = load_dataset(str(tmp_path), CFG)
    assert len(ds) == 4 and ds.classes == ["n01440764", "n01443537"]
    x, y = ds[3]
    assert x.shape == (3, 56, 56) and y == 1
    assert x[2].mean() > x[0].mean()  # blue image: blue channel high


def test_image_folder_errors(tmp_path):
    with pytest.raises(DeployError, match="missing: no such folder"):
        load_dataset(str(tmp_path / "missing"), CFG)
    with pytest.raises(DeployError):
        load_dataset(str(tmp_path), CFG)  # empty: no class folders


def test_input_size_follows_the_patch_embedding():
    """A timm model created with img_size=112 keeps the checkpoint's 224 in pretrained_cfg; the input size
    the SDK feeds it (synthetic images, FLOP counts, exports) must be the one its patch embedding checks."""
    import timm

    from lraqvit_deploy.data import input_size, synthetic_images

    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4, img_size=112)
    assert m.pretrained_cfg["input_size"] == (3, 224, 224)
    assert input_size(m) == (3, 112, 112)
    with torch.no_grad():
        assert m(synthetic_images(m, 2)).shape == (2, 4)
    # no patch embedding: the config's size, 224 px when it names none
    assert input_size(torch.nn.Linear(2, 2)) == (3, 224, 224)
