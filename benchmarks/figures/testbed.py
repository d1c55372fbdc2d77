"""README.md: the test bed's profiles and the CPUs its reference was trained on."""
from __future__ import annotations

from typing import Any, Dict

from .format import FiguresError, Source, code, cpu_label, lr, minutes, table


def _default_row(doc: Dict[str, Any]) -> Dict[str, Any]:
    rows = [r for r in doc["rows"] if r.get("is_default")]
    if len(rows) != 1:
        raise FiguresError(f"expected one row with is_default in a testbed_reference result, found {len(rows)}")
    return rows[0]


def _probe_row(doc: Dict[str, Any]) -> Dict[str, Any]:
    return next(r for r in doc["rows"] if r["name"].startswith("probe"))


def testbed_profiles(quick: Source, full: Source) -> str:
    """README: the two test-bed profiles, their probe and converged top-1 and what building them cost."""
    labels = {"quick": "`quick` (default, CI)", "full": "`full` (`--testbed-profile full`)"}
    rows, cost = [], []
    for src in (quick, full):
        d = src.data
        tb, ref = d["testbed"], d["testbed"]["reference"]
        chosen = _default_row(d)
        rows.append([labels.get(d["profile"], f"`{d['profile']}`"), f"{tb['img_size']} px",
                     f"{tb['n_train']:,} train images ({ref['epochs']:g} epochs, lr {lr(ref['lr'])})",
                     f"{tb['n_test']:,} test images", f"{_probe_row(d)['test_top1']:.1f} %", f"{chosen['test_top1']:.1f} %"])
        cost.append((d["profile"], minutes(chosen["seconds"]), f"{d['threads']} threads of an {cpu_label(d['cpu'])}"))
    lines = table(["profile", "image size", "fitted on", "evaluated on", "probe top-1", "converged top-1"], rows)
    if len({c[2] for c in cost}) == 1:
        took = ", ".join(f"{p} {t}" for p, t, _ in cost) + f" ({cost[0][2]}"
    else:
        took = ", ".join(f"{p} {t} on {w}" for p, t, w in cost) + " ("
    lines += ["", f"Recorded fine-tune time: {took}; {code(quick.path)}, {code(full.path)})."]
    return "\n".join(lines)


def testbed_cpus(*sources: Source) -> str:
    """README: the same quick reference recipe trained on different CPUs scores differently."""
    parts, recipe = [], None
    for src in sources:
        row = _default_row(src.data)
        cfg = {k: v for k, v in (row.get("config") or src.data["testbed"]["reference"]).items() if v is not None}
        if recipe is not None and cfg != recipe:
            raise FiguresError(f"{src.path}: its default reference recipe {cfg} differs from {recipe}; "
                               "the CPU comparison needs the same recipe")
        recipe = cfg
        parts.append(f"{row['test_top1']:.1f} % on an {cpu_label(src.data['cpu'])}")
    files = ", ".join(code(s.path) for s in sources)
    return (f"The {sources[0].data['profile']} profile's converged top-1 (the same recipe, seed and images) was "
            f"{' and '.join(parts)} ({files}).")

