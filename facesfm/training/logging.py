"""Metrics logging: one JSON line per record (appended as training goes, so a killed run keeps
its history), CSV tables per split derived from it, and PNG plots at the end.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from facesfm.io import atomic_path

__all__ = ["MetricsLogger", "plot_metrics", "read_jsonl"]


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: drop it and what follows
    return out


class MetricsLogger:
    """Records ``{"split", "step", "epoch", metric: float, ...}`` to ``<out>/metrics.jsonl``.

    ``truncate_after(step)`` drops records of steps after ``step`` (a resumed run replays them).
    ``write_tables()`` writes ``<out>/<split>.csv`` for each split (atomic).
    """

    def __init__(self, out: str | Path, enabled: bool = True):
        self.out = Path(out)
        self.enabled = enabled
        self.path = self.out / "metrics.jsonl"
        if enabled:
            self.out.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        if not self.enabled:
            return
        keep = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def log(self, split: str, step: int, epoch: int, metrics: dict) -> dict:
        rec = {"split": split, "step": int(step), "epoch": int(epoch)}
        for k, v in metrics.items():
            rec[k] = float(v.item() if hasattr(v, "item") else v)
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        return rec

    def write_tables(self) -> list[Path]:
        if not self.enabled:
            return []
        recs = read_jsonl(self.path)
        paths = []
        for split in sorted({r["split"] for r in recs}):
            rows = [r for r in recs if r["split"] == split]
            keys: list[str] = []
            for r in rows:
                keys.extend(k for k in r if k != "split" and k not in keys)
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in keys})
            p = self.out / f"{split}.csv"
            with atomic_path(p) as tmp:
                tmp.write_text(buf.getvalue())
            paths.append(p)
        return paths


def plot_metrics(jsonl: str | Path, png: str | Path, max_panels: int = 12) -> Path | None:
    """One panel per metric (train curves and validation points), saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_jsonl(jsonl)
    if not recs:
        return None
    names: list[tuple[str, str]] = []
    for r in recs:
        for k in r:
            if k not in ("split", "step", "epoch") and (r["split"], k) not in names:
                names.append((r["split"], k))
    names = names[:max_panels]
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (split, k) in zip(axes.flat, names):
        pts = [
            (r["step"], r[k])
            for r in recs
            if r["split"] == split and k in r and math.isfinite(r[k])
        ]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, "-" if split == "train" else "o-", ms=3)
        ax.set_title(f"{split}: {k}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("step", fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    png = Path(png)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return png
