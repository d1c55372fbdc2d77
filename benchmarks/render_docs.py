"""Every measured number in README.md and docs/*.md, rendered from a committed result file.

A document holds its figures in marked regions; the text between the markers is generated from the
named result files (JSON written by the benchmark scripts) by the named renderer (`benchmarks/figures/`),
never typed:

    <!-- figures: table1 benchmarks/results/table1_lra.json -->

    ...generated Markdown...

    <!-- /figures -->

    python benchmarks/render_docs.py            # rewrite every region of README.md and docs/*.md
    python benchmarks/render_docs.py --check    # change nothing; exit 1 naming each region that differs
    python benchmarks/render_docs.py --check docs/compress.md    # only these documents

Paths in a marker are relative to the repository root. A renderer is a function of the loaded files
only: labels (settings, CPU, image counts) come from what the run recorded, so re-running a
benchmark and then this script updates the documents, and `tests/test_docs_figures.py` fails while a
document and its result file disagree. Standard library only (no torch): the check takes a second.

The same regions keep `benchmarks/README.md`'s index of the scripts (renderer `benchmarks_index`, the
marker naming the folder): generated from each script's module docstring.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

# run as a script, this file's folder is first on sys.path, so the `figures` package beside it imports
# by its plain name (tests get the same through pyproject's pytest `pythonpath`)
from figures import (RENDERERS, ROOT, FiguresError, Mismatch, Source, check, cpu_label, default_documents,
                     interval, lr, regions, render, render_text, table)

__all__ = ["RENDERERS", "ROOT", "FiguresError", "Mismatch", "Source", "check", "cpu_label", "default_documents",
           "interval", "lr", "main", "regions", "render", "render_text", "table"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("documents", nargs="*", type=Path, help="default: README.md and docs/*.md")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 when a region differs from its files")
    ap.add_argument("--root", type=Path, default=ROOT, help="the folder marker paths are relative to")
    args = ap.parse_args(argv)
    docs = args.documents or default_documents(args.root)
    try:
        if args.check:
            bad = check(docs, args.root)
            for m in bad:
                print(m, file=sys.stderr)
            n = sum(len(regions(Path(p).read_text(), str(p))) for p in docs)
            print(f"{n} figure regions in {len(docs)} documents; {len(bad)} differ from their result files",
                  file=sys.stderr if bad else sys.stdout)
            return 1 if bad else 0
        for doc in render(docs, args.root):
            print(f"rewrote {doc}")
        return 0
    except FiguresError as e:
        print(f"render_docs: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
