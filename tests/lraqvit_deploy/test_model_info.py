"""`ModelInfo`: one record on a model (spec, manifest, quant, compression, path), with the former attributes kept
in step for code that still uses them."""
import copy

import pytest
import torch.nn as nn

from lraqvit_deploy.model_info import FIELDS, ModelInfo, model_info, record


def test_record_and_read_back():
    m = nn.Linear(2, 2)
    assert model_info(m) == ModelInfo() and model_info(m) is model_info(m)
    info = record(m, quant={"config": {"method": "wads"}}, path="out/a")
    assert info is model_info(m) and info.quant["config"]["method"] == "wads" and info.path == "out/a"
    assert m.lraqvit_quant is info.quant and m.lraqvit_path == "out/a"  # the former names still read
    assert not hasattr(m, "lraqvit_manifest")  # only what was recorded
    with pytest.raises(TypeError, match="no field"):
        record(m, colour="red")
    assert FIELDS == ("spec", "manifest", "quant", "compression", "path")


def test_values_set_through_the_former_names_are_taken_up():
    """Code that still writes `model.lraqvit_compression = ...` is seen by `model_info`."""
    m = nn.Linear(2, 2)
    record(m, compression={"method": "lra"})
    m.lraqvit_compression = {"method": "rb-lra"}
    m.lraqvit_spec = "spec"
    assert model_info(m).compression == {"method": "rb-lra"} and model_info(m).spec == "spec"


def test_a_copied_model_keeps_one_consistent_record():
    m = nn.Linear(2, 2)
    record(m, manifest={"format": 1})
    c = copy.deepcopy(m)
    assert model_info(c).manifest == {"format": 1} and model_info(c).manifest is c.lraqvit_manifest
    record(c, manifest={"format": 2})
    assert model_info(m).manifest == {"format": 1}
