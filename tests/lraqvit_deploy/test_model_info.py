"""`ModelInfo`: one record on a model (spec, manifest, quant, compression, path), the only place the SDK keeps it."""
import copy

import pytest
import torch.nn as nn

from lraqvit_deploy.model_info import FIELDS, ModelInfo, model_info, record


def test_record_and_read_back():
    m = nn.Linear(2, 2)
    assert model_info(m) == ModelInfo() and model_info(m) is model_info(m)
    info = record(m, quant={"config": {"method": "wads"}}, path="out/a")
    assert info is model_info(m) and info.quant["config"]["method"] == "wads" and info.path == "out/a"
    assert not any(k.startswith("lraqvit_") and k != "lraqvit_info" for k in vars(m))  # one attribute, no aliases
    with pytest.raises(TypeError, match="no field"):
        record(m, colour="red")
    assert FIELDS == ("spec", "manifest", "quant", "compression", "path")


def test_a_copied_model_keeps_one_consistent_record():
    m = nn.Linear(2, 2)
    record(m, manifest={"format": 1})
    c = copy.deepcopy(m)
    assert model_info(c).manifest == {"format": 1} and model_info(c) is not model_info(m)
    record(c, manifest={"format": 2})
    assert model_info(m).manifest == {"format": 1}
