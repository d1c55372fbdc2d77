"""Edge-dialect passes run before XNNPACK partitioning, so shape-only ops stop splitting delegates.

timm ViTs leave a few static-shape ops outside XNNPACK (seen on DeiT/DINOv2): no-op
`expand_copy` from `q @ k.T` broadcasting, `squeeze_copy` from `qkv.unbind(0)` and the
`select_copy` of the class-token pooling. Each is a reshape or a slice for static shapes, which
XNNPACK does run; rewriting them merges delegate segments.

Both passes live in this one module (not a `passes/` package) so the package list in
pyproject.toml stays as it is.
"""
from __future__ import annotations

from typing import List


def pre_partition_passes() -> List:
    """The passes, in order (ExecuTorch's own no-op-expand removal first)."""
    from executorch.backends.xnnpack._passes.remove_noop_expand_copy_pass import RemoveNoopExpandCopyPass

    return [RemoveNoopExpandCopyPass(), SqueezeToViewPass(), SelectToSlicePass()]


def _static(shape) -> bool:
    return all(isinstance(d, int) for d in shape)


def SqueezeToViewPass():
    """Built lazily so importing this module does not import executorch."""
    import torch
    from executorch.exir.dialects._ops import ops as exir_ops
    from executorch.exir.pass_base import ExportPass, PassResult

    targets = {exir_ops.edge.aten.squeeze_copy.dims, exir_ops.edge.aten.squeeze_copy.dim,
               exir_ops.edge.aten.squeeze_copy.default, exir_ops.edge.aten.unsqueeze_copy.default}

    class _SqueezeToViewPass(ExportPass):
        """Applies when input and output shapes are static: a squeeze is then just a reshape."""

        def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
            graph, changed = graph_module.graph, False
            for node in list(graph.nodes):
                if node.op != "call_function" or node.target not in targets:
                    continue
                out = node.meta.get("val")
                if out is None or not _static(out.shape):
                    continue
                with graph.inserting_before(node):
                    view = graph.call_function(exir_ops.edge.aten.view_copy.default, (node.args[0], list(out.shape)))
                view.meta = dict(node.meta)
                node.replace_all_uses_with(view)
                graph.erase_node(node)
                changed = True
            if not changed:
                return PassResult(graph_module, False)
            graph.lint()
            graph_module.recompile()
            return PassResult(super(_SqueezeToViewPass, self).call(graph_module).graph_module, True)

    return _SqueezeToViewPass()


def SelectToSlicePass():
    """Built lazily so importing this module does not import executorch."""
    import torch
    from executorch.exir.dialects._ops import ops as exir_ops
    from executorch.exir.pass_base import ExportPass, PassResult

    class _SelectToSlicePass(ExportPass):
        """Applies to static shapes with a non-negative index (the class-token pooling `x[:, 0]`)."""

        def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
            graph, changed = graph_module.graph, False
            for node in list(graph.nodes):
                if node.op != "call_function" or node.target != exir_ops.edge.aten.select_copy.int:
                    continue
                src, dim, index = node.args
                inp, out = src.meta.get("val"), node.meta.get("val")
                if inp is None or out is None or not all(isinstance(d, int) for d in inp.shape):
                    continue
                dim = dim % inp.dim()
                index = index % inp.shape[dim]
                with graph.inserting_before(node):
                    sl = graph.call_function(exir_ops.edge.aten.slice_copy.Tensor, (src, dim, index, index + 1, 1))
                    view = graph.call_function(exir_ops.edge.aten.view_copy.default, (sl, list(out.shape)))
                shape = list(inp.shape)
                shape[dim] = 1
                sl.meta = dict(node.meta)
                sl.meta["val"] = inp.new_empty(shape)
                view.meta = dict(node.meta)
                node.replace_all_uses_with(view)
                graph.erase_node(node)
                changed = True
            if not changed:
                return PassResult(graph_module, False)
            graph.lint()
            graph_module.recompile()
            return PassResult(super(_SelectToSlicePass, self).call(graph_module).graph_module, True)

    return _SelectToSlicePass()
