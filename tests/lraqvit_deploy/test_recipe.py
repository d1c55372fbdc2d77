"""`Recipe`: composition rules checked on construction, and a lossless dict form (TOML / JSON)."""
import pytest

from lraqvit_deploy.lowrank import DistillConfig, LowRankConfig
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.quant import quant_config
from lraqvit_deploy.recipe import AllocationConfig, Recipe


def test_roundtrip_through_a_dict():
    r = Recipe(low_rank=LowRankConfig("rb-lra", param_reduction=0.45, svd="auto"),
               allocation=AllocationConfig("energy", calib_images=64), distill=DistillConfig(steps=12),
               quant=quant_config("wads", wads_iters=7), quant_calib_images=16)
    back = Recipe.from_dict(r.to_dict())
    assert back.to_dict() == r.to_dict() and back.quant.method == "wads" and back.distill.steps == 12


@pytest.mark.parametrize("kwargs, words", [
    ({}, None),  # empty is allowed as a value; compress() refuses it
    ({"distill": DistillConfig()}, "distillation trains the low-rank factors"),
    ({"allocation": AllocationConfig("energy")}, "needs a low-rank method"),
    ({"low_rank": LowRankConfig("lra", ranks={"blocks.0.attn.qkv": 4}), "allocation": AllocationConfig("energy")},
     "chooses the ranks itself"),
    ({"allocation": AllocationConfig("mlorq", memory_budget_mb=3), "distill": DistillConfig(),
      "low_rank": LowRankConfig("lra", param_reduction=0.3)}, "chooses every layer's rank"),
    ({"quant_calib_images": 0}, r"quant_calib_images = 0: must be >= 1 \(calibration images"),
    ({"low_rank": "lra"}, "must be a LowRankConfig"),
])
def test_composition_rules(kwargs, words):
    if words is None:
        assert Recipe(**kwargs).empty
        return
    with pytest.raises(DeployError, match=words):
        Recipe(**kwargs)


def test_allocation_config_limits():
    with pytest.raises(DeployError, match="memory_budget_mb"):
        AllocationConfig("mlorq")
    with pytest.raises(DeployError, match="within 2..8"):
        AllocationConfig(mlorq_bits=(1, 4))
    with pytest.raises(DeployError, match="calib_images = 0"):
        AllocationConfig(calib_images=0)
    assert AllocationConfig("mlorq", memory_budget_mb=2, mlorq_target="tensorrt").target_bits() == ((8,), (8,))


def test_from_dict_errors_name_the_key():
    with pytest.raises(DeployError, match=r"recipe.low_rank: unknown key\(s\) \['rank'\]"):
        Recipe.from_dict({"low_rank": {"method": "lra", "rank": 3}})
    with pytest.raises(DeployError, match="name the method"):
        Recipe.from_dict({"quant": {"wads_iters": 3}})
    with pytest.raises(DeployError, match=r"unknown key\(s\) \['colour'\]"):
        Recipe.from_dict({"colour": 1})
