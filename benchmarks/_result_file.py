"""The result file every table script writes, and the one `--out` convention.

`--out STEM` writes `STEM.json` (what `render_docs.py` and the tests read) and, where the script has a
report, `STEM.md`; a path ending in `.json` or `.md` names the same stem. `header()` is what every
result records beside its numbers: a schema string, the date, the command and the machine (CPU from
`lscpu`, package versions), because ratios measured on one CPU do not carry to another.

Scripts import this module by its plain name: run as `python benchmarks/SCRIPT.py`, Python puts
`benchmarks/` first on `sys.path` (tests get the same through pyproject's pytest `pythonpath`).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from lraqvit_deploy.io import atomic_write, write_json
from lraqvit_deploy.measure.host import cpu_line, lscpu, versions

__all__ = ["add_out", "cpu_line", "header", "out_stem", "write"]

SUFFIXES = (".json", ".md")


def out_stem(path: "str | Path") -> Path:
    """`results/x`, `results/x.json` and `results/x.md` all name the stem `results/x`."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in SUFFIXES else path


def add_out(parser: argparse.ArgumentParser, default: Optional[Path], markdown: bool = True,
            aliases: Sequence[str] = ()) -> None:
    """The `--out STEM` argument (default `default`, whose files are the committed results; None: print only)."""
    what = "STEM.json and STEM.md" if markdown else "STEM.json"
    where = f"default {default}" if default is not None else "default: print only"
    parser.add_argument("--out", *aliases, type=out_stem, default=None if default is None else out_stem(default),
                        metavar="STEM", help=f"writes {what} (a path ending in .json/.md names the same stem; {where})")


def header(schema: str, script: str, argv: Optional[Sequence[str]] = None, cpu: Optional[Dict[str, Any]] = None
           ) -> Dict[str, Any]:
    """schema, date, command (`python benchmarks/SCRIPT.py ARGS`), cpu (lscpu fields) and package versions."""
    args = list(sys.argv[1:] if argv is None else argv)
    return {"schema": schema, "date": time.strftime("%Y-%m-%d"),
            "command": " ".join(["python", f"benchmarks/{Path(script).name}", *args]),
            "cpu": lscpu() if cpu is None else cpu, "versions": versions()}


def write(stem: Path, data: Dict[str, Any], markdown: Optional[str] = None) -> Path:
    """Write `stem.json` (and `stem.md` when given), each atomically, creating the folder; returns the JSON path."""
    stem = out_stem(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    path = stem.parent / (stem.name + ".json")
    write_json(path, data)
    if markdown is not None:
        with atomic_write(stem.parent / (stem.name + ".md"), "w") as f:
            f.write(markdown)
    return path
