"""The renderers by the name a document's marker gives them: `<!-- figures: NAME FILE... -->`.

A renderer is a function of the loaded files only (one `Source` per path named in the marker: a JSON
result file, or a folder as {file name: text} of its `*.py` files) returning Markdown; one module per
document it serves.
"""
from __future__ import annotations

from typing import Callable, Dict

from .compress import kd_cost, kd_objective, svd_why, table1
from .devices import arm_testbed, jetson_sizes, model_coverage, table4_end_to_end, table4_testbed
from .index import benchmarks_index
from .latency_budget import latency_check, testbed_latency
from .quantization import table2
from .size_budget import four_bit_scale, size_goals
from .testbed import testbed_cpus, testbed_profiles

RENDERERS: Dict[str, Callable[..., str]] = {
    "testbed_profiles": testbed_profiles, "testbed_cpus": testbed_cpus, "svd_why": svd_why,
    "kd_objective": kd_objective, "table1": table1, "kd_cost": kd_cost, "table2": table2,
    "arm_testbed": arm_testbed, "jetson_sizes": jetson_sizes, "table4_testbed": table4_testbed, "table4_end_to_end": table4_end_to_end,
    "model_coverage": model_coverage, "size_goals": size_goals, "four_bit_scale": four_bit_scale, "benchmarks_index": benchmarks_index,
    "latency_check": latency_check, "testbed_latency": testbed_latency,
}
