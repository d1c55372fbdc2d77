"""Figures from the results document: latency and size per method, and top-1 vs size when known.

matplotlib is optional: without it the tables are still written and `write_plots` says how to get
the figures. Only measured numbers are drawn; a missing one is labelled, never drawn as zero.
"""
from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any, Dict, List

from ..artifacts import atomic_write

MISSING_HINT = "matplotlib is not installed: `pip install matplotlib` for the plots (the tables are written)"


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    with atomic_write(path) as f:
        f.write(buf.getvalue())
    return path


def _latency_and_size(results: Dict[str, Any], plt):
    rows, cols = results["rows"], results["columns"]
    one_model = len({x["model"] for x in rows}) == 1
    labels = [textwrap.fill(r["method_label"] if one_model else f"{r['model_label']}: {r['method_label']}", 16)
              for r in rows]
    fig, (ax_l, ax_s) = plt.subplots(1, 2, figsize=(4 + 1.6 * len(rows), 4.2))
    width = 0.8 / max(1, len(cols))
    for j, c in enumerate(cols):
        xs = [i + (j - (len(cols) - 1) / 2) * width for i in range(len(rows))]
        for x, r in zip(xs, rows):
            lat = r["latency"][c["id"]]
            if "median_ms" in lat:
                ax_l.bar(x, lat["median_ms"], width, color=f"C{j}")
                ax_l.annotate(f"{lat['median_ms']:.1f}", (x, lat["median_ms"]), ha="center", va="bottom", fontsize=7)
            else:
                ax_l.annotate("not\nmeasured", (x, 0), ha="center", va="bottom", fontsize=6, color=f"C{j}",
                              rotation=90)
    ax_l.set_xticks(range(len(rows)), labels, fontsize=8)
    ax_l.set_ylabel("latency (ms, median, batch 1)")
    ax_l.set_title("Latency per method")
    from matplotlib.patches import Patch

    ax_l.legend(handles=[Patch(color=f"C{j}", label=c["label"].replace(" (ms)", "")) for j, c in enumerate(cols)],
                fontsize=8)
    sizes = [r.get("size_mb") for r in rows]
    for i, s in enumerate(sizes):
        if s is not None:
            ax_s.bar(i, s, 0.6, color="C7")
            ax_s.annotate(f"{s:.1f}", (i, s), ha="center", va="bottom", fontsize=8)
        else:
            ax_s.annotate("not\nmeasured", (i, 0), ha="center", va="bottom", fontsize=7)
    ax_s.set_xticks(range(len(rows)), labels, fontsize=8)
    ax_s.set_ylabel("size (MB)")
    ax_s.set_title("Size per method")
    fig.suptitle(f"{results['name']}: Table 4", fontsize=10)
    return fig


def accuracy_points(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """(weights size, top-1) of every method where both are known, one point per (model, method).

    Sizes are the models' own weights (from eval/compress) for every point, so that points compare;
    the program sizes of Table 4 exist only for the methods that were built.
    """
    pts: Dict[tuple, Dict[str, Any]] = {}
    for r in results["rows"]:
        if r.get("model_size_mb") is not None and r.get("top1") is not None:
            pts[(r["model"], r["method"])] = {"label": r["method_label"], "model": r["model_label"],
                                              "size_mb": r["model_size_mb"], "top1": r["top1"]}
    for t in results.get("accuracy", []):
        for r in t["rows"]:
            if (r["model"], r["method"]) not in pts and r.get("size_mb") is not None and r.get("top1") is not None:
                pts[(r["model"], r["method"])] = {"label": r["method_label"], "model": r["model_label"],
                                                  "size_mb": r["size_mb"], "top1": r["top1"]}
    return list(pts.values())


def _accuracy_vs_size(points: List[Dict[str, Any]], title: str, plt):
    fig, ax = plt.subplots(figsize=(6, 4.2))
    models = sorted({p["model"] for p in points})
    for k, model in enumerate(models):
        mine = [p for p in points if p["model"] == model]
        ax.scatter([p["size_mb"] for p in mine], [p["top1"] for p in mine], color=f"C{k}", label=model, zorder=3)
        for p in mine:
            ax.annotate(p["label"], (p["size_mb"], p["top1"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("model size (MB, weights)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def write_plots(results: Dict[str, Any], out_dir: Path) -> Dict[str, Any]:
    """Write table4.png (and accuracy_vs_size.png when accuracies are known); {name: path} or {"skipped": why}."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {"skipped": MISSING_HINT}
    out_dir = Path(out_dir)
    paths: Dict[str, Any] = {}
    fig = _latency_and_size(results, plt)
    paths["latency_size"] = _save(fig, out_dir / "table4.png")
    plt.close(fig)
    points = accuracy_points(results)
    if points:
        fig = _accuracy_vs_size(points, f"{results['name']}: top-1 vs size", plt)
        paths["accuracy_vs_size"] = _save(fig, out_dir / "accuracy_vs_size.png")
        plt.close(fig)
    return paths
