"""Figure regions in a document: find the markers, render each region from its result files, compare
with the committed text, rewrite in place."""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Sequence

from .format import FiguresError, Source
from .renderers import RENDERERS

ROOT = Path(__file__).resolve().parents[2]
OPEN = re.compile(r"<!-- figures: (?P<name>[\w-]+)(?P<files>(?: [^\s>]+)+) -->")
CLOSE = "<!-- /figures -->"


def default_documents(root: Path = ROOT) -> List[Path]:
    index = root / "benchmarks" / "README.md"  # the generated benchmarks index
    return [root / "README.md", *sorted((root / "docs").glob("*.md")), *([index] if index.is_file() else [])]


def load(path: Path) -> Any:
    """A JSON result file's data, or a folder's {file name: text} of its `*.py` files."""
    if path.is_dir():
        return {p.name: p.read_text() for p in sorted(path.glob("*.py"))}
    return json.loads(path.read_text())


@dataclass
class Region:
    name: str
    files: List[str]
    line: int  # 1-based line of the opening marker
    start: int  # offsets of the body (between the markers)
    end: int


def regions(text: str, doc: str = "document") -> List[Region]:
    out: List[Region] = []
    pos = 0
    while True:
        m = OPEN.search(text, pos)
        close = text.find(CLOSE, pos)
        if m is None:
            if close >= 0:
                raise FiguresError(f"{doc}:{text.count(chr(10), 0, close) + 1}: {CLOSE} without an opening marker")
            return out
        line = text.count("\n", 0, m.start()) + 1
        if close < 0 or close < m.end():
            raise FiguresError(f"{doc}:{line}: region `{m.group('name')}` is not closed with {CLOSE}")
        nxt = OPEN.search(text, m.end())
        if nxt is not None and nxt.start() < close:
            raise FiguresError(f"{doc}:{line}: region `{m.group('name')}` contains another region")
        out.append(Region(m.group("name"), m.group("files").split(), line, m.end(), close))
        pos = close + len(CLOSE)


def render_region(region: Region, root: Path, doc: str = "document") -> str:
    fn = RENDERERS.get(region.name)
    if fn is None:
        raise FiguresError(f"{doc}:{region.line}: unknown renderer `{region.name}` (known: {', '.join(sorted(RENDERERS))})")
    sources = []
    for f in region.files:
        path = root / f
        if not path.exists():
            raise FiguresError(f"{doc}:{region.line}: region `{region.name}`: result file {f} does not exist")
        sources.append(Source(f, load(path)))
    try:
        body = fn(*sources)
    except FiguresError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, StopIteration) as e:
        raise FiguresError(f"{doc}:{region.line}: region `{region.name}` cannot be rendered from "
                           f"{', '.join(region.files)}: {type(e).__name__}: {e}") from e
    return "\n\n" + body.strip("\n") + "\n\n"


def render_text(text: str, root: Path = ROOT, doc: str = "document") -> str:
    out, pos = [], 0
    for r in regions(text, doc):
        out += [text[pos:r.start], render_region(r, root, doc)]
        pos = r.end
    return "".join(out) + text[pos:]


@dataclass
class Mismatch:
    doc: str
    line: int
    name: str
    files: List[str]
    diff: str

    def __str__(self) -> str:
        return (f"{self.doc}:{self.line}: region `{self.name}` differs from {', '.join(self.files)} "
                f"(run python benchmarks/render_docs.py)\n{self.diff}")


def check_text(text: str, root: Path = ROOT, doc: str = "document") -> List[Mismatch]:
    bad = []
    for r in regions(text, doc):
        want, have = render_region(r, root, doc), text[r.start:r.end]
        if want != have:
            diff = "".join(difflib.unified_diff(have.splitlines(True), want.splitlines(True), "committed", "rendered", n=0))
            bad.append(Mismatch(doc, r.line, r.name, r.files, diff))
    return bad


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def check(paths: Sequence[Path], root: Path = ROOT) -> List[Mismatch]:
    return [m for p in paths for m in check_text(Path(p).read_text(), root, _rel(Path(p), root))]


def render(paths: Sequence[Path], root: Path = ROOT) -> List[str]:
    """Rewrite the regions of `paths` in place; returns the documents that changed."""
    changed = []
    for p in paths:
        p = Path(p)
        text = p.read_text()
        new = render_text(text, root, _rel(p, root))
        if new != text:
            p.write_text(new)
            changed.append(_rel(p, root))
    return changed

