"""Draw the results document as the paper's tables: Markdown, CSV and JSON (pure functions + one writer).

A missing number is always written as "not measured (<reason>)"; nothing is ever filled in.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..artifacts import atomic_write, write_json

TABLE4_HEAD = ["Model", "Method", "Prec.", "Size (MB)"]
MAX_REASON = 100


def short(reason: str) -> str:
    """The first clause on one line, at most MAX_REASON characters (the notes keep the full text)."""
    line = " ".join(str(reason).split()).split("; ")[0]
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 1].rstrip() + "…"


def not_measured(reason: str) -> str:
    return f"not measured ({short(reason)})"


def failed(reason: str) -> str:
    """A cell whose program or engine failed its correctness gates: no latency is shown."""
    return f"FAILED ({short(reason)})"


def latency_text(lat: Dict[str, Any]) -> str:
    if "median_ms" in lat:
        return fmt_ms(lat["median_ms"])
    if "failed" in lat:
        return failed(lat["failed"])
    return not_measured(lat.get("not_measured", ""))


def fmt_ms(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def fmt_num(v: Optional[float], digits: int = 1) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def fmt_ratio(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v:.2f}×"


def table4_rows(results: Dict[str, Any]) -> List[List[str]]:
    """Table 4 as a header row plus one row of strings per (model, method)."""
    cols = results["columns"]
    rows = [TABLE4_HEAD + [c["label"] for c in cols]]
    for r in results["rows"]:
        size = fmt_num(r["size_mb"]) if r.get("size_mb") is not None else not_measured(r.get("size_not_measured", ""))
        cells = [r["model_label"], r["method_label"], r["prec"], size]
        for c in cols:
            cells.append(latency_text(r["latency"][c["id"]]))
        rows.append(cells)
    return rows


def speedup_rows(results: Dict[str, Any]) -> List[List[str]]:
    cols = results["columns"]
    rows = [["Model", "Method", "vs", "Size ×"] + [c["label"].replace("(ms)", "×") for c in cols]]
    labels = {(r["model"], r["method"]): r for r in results["rows"]}
    for s in results["speedups"]:
        base = labels[(s["model"], s["vs"])]
        rows.append([base["model_label"], s["method_label"], base["method_label"], fmt_ratio(s["size"])]
                    + [fmt_ratio(s["latency"][c["id"]]) for c in cols])
    return rows


def accuracy_rows(table: Dict[str, Any]) -> List[List[str]]:
    """Paper Table 1 shape (kind "compression") or Tables 2 / 9 shape (kind "quantization")."""
    if table["kind"] == "compression":
        rows = [["Model", "Method", "Params (M)", "Params Δ (%)", "GFLOPs", "Top-1 (%)", "Δ Top-1"]]
    else:
        rows = [["Model", "Method", "Prec.", "Size (MB)", "Top-1 (%)", "Δ vs its FP32"]]
    for r in table["rows"]:
        head = [r["model_label"], r["method_label"]]
        if "not_measured" in r:
            rows.append(head + [not_measured(r["not_measured"])] + [""] * (len(rows[0]) - 3))
            continue
        top1 = r.get("top1")
        if table["kind"] == "compression":
            base_p, base_t = r.get("baseline_params"), r.get("baseline_top1")
            dp = f"{100 * (r['params'] / base_p - 1):+.1f}" if base_p and r.get("params") else "—"
            dt = f"{top1 - base_t:+.2f}" if base_t is not None and top1 is not None else "—"
            rows.append(head + [fmt_num(r["params"] / 1e6 if r.get("params") else None, 2), dp,
                                fmt_num(r.get("gflops"), 3), fmt_num(top1, 2), dt])
        else:
            ref = r.get("fp32_top1")  # the same model before quantization; FP32 rows are references
            dt = f"{top1 - ref:+.2f}" if ref is not None and top1 is not None else "—"
            rows.append(head + [r["prec"], fmt_num(r.get("size_mb"), 1), fmt_num(top1, 2), dt])
    return rows


def markdown(rows: List[List[str]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in esc[0]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in esc[1:]]
    return "\n".join(lines) + "\n"


def to_csv(rows: List[List[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def notes(results: Dict[str, Any]) -> List[str]:
    """Devices, protocol and the full reasons behind every "not measured"."""
    out = []
    s = results["settings"]
    out.append(f"Latency: median of {s['iterations']} timed runs after {s['warmup']} warm-up, "
               f"{s['threads']} thread(s), batch 1. Size: the shipped program when built, else the weights.")
    devices: Dict[str, set] = {}
    reasons: Dict[str, set] = {}
    failures: Dict[str, set] = {}
    for r in results["rows"]:
        for c in results["columns"]:
            lat = r["latency"][c["id"]]
            if lat.get("device"):
                devices.setdefault(c["label"], set()).add(lat["device"])
            elif "failed" in lat:
                failures.setdefault(c["label"], set()).add(f"{r['model_label']} {r['method_label']}: {lat['failed']}")
            elif "not_measured" in lat and short(lat["not_measured"]) != " ".join(lat["not_measured"].split()):
                reasons.setdefault(c["label"], set()).add(lat["not_measured"])
    for label, devs in devices.items():
        out.append(f"{label}: " + "; ".join(sorted(devs)))
    for label, rs in failures.items():
        out += [f"{label} FAILED (no latency shown): {x}" for x in sorted(rs)]
    for label, rs in reasons.items():
        out += [f"{label} not measured: {x}" for x in sorted(rs)]
    run = results.get("run", {})
    if run.get("run_id"):
        load = f" (load average {run['loadavg'][0]:.1f} at the end)" if run.get("loadavg") else ""
        out.append(f"Run {run['run_id']} started {run.get('started', '?')} on {run.get('host', '?')}{load}; "
                   f"steps: {', '.join(f'{k} {v}' for k, v in results.get('steps', {}).items())}.")
    return out


def render_markdown(results: Dict[str, Any]) -> str:
    parts = [f"# {results['name']}: Table 4 (size and latency)\n", markdown(table4_rows(results))]
    if results["speedups"]:
        base = next(r["method_label"] for r in results["rows"] if r["method"] == results["baseline"])
        parts += [f"\n## Speedups vs {base} (same run, same device)\n", markdown(speedup_rows(results))]
    for t in results.get("accuracy", []):
        parts += [f"\n## {t['title']}\n", markdown(accuracy_rows(t))]
    parts += ["\n" + "\n".join(f"- {n}" for n in notes(results)) + "\n"]
    return "".join(parts)


def write_tables(results: Dict[str, Any], out_dir: Path) -> Dict[str, Path]:
    """Write table4.{md,csv,json}, speedups.csv and accuracy_<id>.csv atomically; returns the paths."""
    out_dir = Path(out_dir)
    paths = {"markdown": out_dir / "table4.md", "csv": out_dir / "table4.csv", "json": out_dir / "table4.json"}
    with atomic_write(paths["markdown"], "w") as f:
        f.write(render_markdown(results))
    with atomic_write(paths["csv"], "w") as f:
        f.write(to_csv(table4_rows(results)))
    write_json(paths["json"], results)
    if results["speedups"]:
        paths["speedups"] = out_dir / "speedups.csv"
        with atomic_write(paths["speedups"], "w") as f:
            f.write(to_csv(speedup_rows(results)))
    for t in results.get("accuracy", []):
        paths[t["id"]] = out_dir / f"accuracy_{t['id']}.csv"
        with atomic_write(paths[t["id"]], "w") as f:
            f.write(to_csv(accuracy_rows(t)))
    return paths
