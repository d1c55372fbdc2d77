"""Which operators the XNNPACK delegate runs and which fall back to ExecuTorch's portable kernels."""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Dict

# Graph plumbing that is not an operator either side of the delegate boundary.
_IGNORED = {"getitem", "executorch_call_delegate", "alloc"}


def _op_name(node) -> str:
    target = node.target
    name = getattr(target, "__name__", str(target))
    name = name.split("::")[-1]
    return name.replace("aten.", "").replace(".default", "")


@dataclass
class DelegationReport:
    """Operator counts inside and outside XNNPACK delegate segments of one lowered method."""

    segments: int
    delegated_ops: int
    non_delegated_ops: int
    non_delegated_by_op: Dict[str, int] = field(default_factory=dict)
    delegated_by_op: Dict[str, int] = field(default_factory=dict)

    @property
    def delegated_fraction(self) -> float:
        total = self.delegated_ops + self.non_delegated_ops
        return self.delegated_ops / total if total else 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "delegated_fraction": round(self.delegated_fraction, 4)}


def delegation_report(graph_module) -> DelegationReport:
    """Count call_function nodes of a lowered edge graph (`edge.exported_program().graph_module`)."""
    outside, inside, segments = Counter(), Counter(), 0
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module"):
            segments += 1
            lowered = getattr(graph_module, node.target)
            for inner in lowered.original_module.graph.nodes:
                if inner.op == "call_function" and _op_name(inner) not in _IGNORED:
                    inside[_op_name(inner)] += 1
        elif node.op == "call_function" and _op_name(node) not in _IGNORED:
            outside[_op_name(node)] += 1
    return DelegationReport(segments, sum(inside.values()), sum(outside.values()),
                            dict(outside.most_common()), dict(inside.most_common()))
