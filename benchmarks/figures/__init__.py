"""The figure regions of README.md and docs/*.md and their renderers (`benchmarks/render_docs.py` runs them).

    format.py        numbers, intervals, the CPU label, Markdown tables; FiguresError, Source
    regions.py       markers, render / check a document
    renderers.py     RENDERERS: marker name -> function
    testbed.py, compress.py, quantization.py, devices.py, size_budget.py: one module per document
    index.py         benchmarks/README.md's index of the scripts, from their module docstrings
    pipeline_scale.py  `pipeline_scale.py`'s report (render_markdown of its JSON; a whole file, not a region)

Standard library only (no torch; `size_goals` imports `lraqvit_deploy.stats` when it runs, `pipeline_scale` the
torch-free `lraqvit_deploy.measure` and `pipeline_scale_steps`, the protocol it reports).
"""
from .format import MINUS, FiguresError, Source, code, cpu_label, interval, lr, minutes, num, signed, table
from .regions import (CLOSE, OPEN, ROOT, Mismatch, Region, check, check_text, default_documents, regions, render,
                      render_region, render_text)
from .renderers import RENDERERS

__all__ = ["MINUS", "FiguresError", "Source", "code", "cpu_label", "interval", "lr", "minutes", "num", "signed",
           "table", "CLOSE", "OPEN", "ROOT", "Mismatch", "Region", "check", "check_text", "default_documents",
           "regions", "render", "render_region", "render_text", "RENDERERS"]
