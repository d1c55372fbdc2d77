"""benchmarks/README.md: the index of `benchmarks/*.py`, generated from each file's module docstring.

The marker names the folder (`<!-- figures: benchmarks_index benchmarks -->`); a folder loads as
{file name: text} of its `*.py` files. Per file: the docstring's first paragraph and its usage lines
(`python benchmarks/NAME.py ...`); a file without usage lines is a module the scripts import.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Dict, List, Tuple

from .format import FiguresError, Source, table


@dataclass(frozen=True)
class Entry:
    name: str  # file name, e.g. "table1_lra.py"
    summary: str  # the docstring's first paragraph, on one line
    usage: Tuple[str, ...]  # the docstring's `python benchmarks/NAME.py ...` lines


def entries(files: Dict[str, str]) -> List[Entry]:
    """One entry per `*.py` file (sorted by name); a file without a module docstring is an error."""
    out = []
    for name in sorted(files):
        doc = ast.get_docstring(ast.parse(files[name], name))
        if not doc:
            raise FiguresError(f"benchmarks/{name} has no module docstring to index")
        summary = " ".join(doc.split("\n\n")[0].split())
        use = re.compile(rf"^\s*python\s+benchmarks/{re.escape(name)}(\s|$)")
        usage = tuple(" ".join(line.split()) for line in doc.splitlines() if use.match(line))
        out.append(Entry(name, summary, usage))
    return out


def command(line: str) -> str:
    """The command part of a usage line (its `# comment` dropped)."""
    return line.split("  #")[0].split(" # ")[0].strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def benchmarks_index(folder: Source) -> str:
    """benchmarks/README.md: every script and shared module, what it does and how it is run."""
    if not isinstance(folder.data, dict):
        raise FiguresError(f"benchmarks_index reads a folder, not {folder.path}")
    rows = []
    for e in entries(folder.data):
        usage = "<br>".join(f"`{_cell(u)}`" for u in e.usage) or "(imported by the scripts)"
        rows.append([f"`{e.name}`", _cell(e.summary), usage])
    lines = table(["file", "what it does", "usage"], rows)
    n = sum(1 for e in entries(folder.data) if e.usage)
    lines += ["", f"{n} scripts and {len(rows) - n} shared modules in `{folder.path}/`, generated from their module "
                  "docstrings (`python benchmarks/render_docs.py`); each script's `--help` has the rest."]
    return "\n".join(lines)
