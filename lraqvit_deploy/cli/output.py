"""Printing results as an aligned table and writing them as JSON."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional


def format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.1f}"
    return str(v)


def emit(data: Dict[str, Any], json_path: Optional[Path] = None, title: str = "") -> None:
    """Print `data` as a two-column table; also write it to `json_path` (atomically) if given."""
    if title:
        print(title)
    width = max((len(k) for k in data), default=0)
    for k, v in data.items():
        if v is None or isinstance(v, (dict, list)):
            continue
        print(f"  {k:<{width}}  {format_value(v)}")
    if json_path is not None:
        from ..artifacts import write_json

        write_json(json_path, data)
        print(f"wrote {json_path}")
