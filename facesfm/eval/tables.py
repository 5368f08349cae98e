"""Result tables (Markdown + CSV) and small plots (PNG), all written atomically.

Published figures from the paper always sit in their own column, headed
``"paper (not measured on our data)"``: they were measured on Stirling ESRC 3D and
FaceScape, which we do not have, so they are context, never our result.

Plots use matplotlib's object API with the Agg canvas (no pyplot state, no display needed).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesfm.io import atomic_path

__all__ = [
    "PAPER_COLUMN",
    "PAPER_TABLE1",
    "PAPER_TABLE2",
    "PAPER_UNIT_NOTE",
    "Table",
    "comparison_table",
    "landmark_sweep_table",
    "plot_landmark_sweep",
    "plot_pose_errors",
    "write_table",
]

PAPER_COLUMN = "paper (not measured on our data)"

#: Table 1 of the paper: error (labelled "MSE ... in mm") against the number of landmarks used
#: in training, per dataset, after ICP alignment (point-to-point distance).
PAPER_TABLE1: dict[str, dict[int, float]] = {
    "Stirling": {68: 17.15, 200: 16.83, 300: 12.31, 400: 9.65, 500: 6.89, 568: 4.26},
    "Facescape": {68: 19.72, 200: 18.81, 300: 16.30, 400: 12.48, 500: 10.78, 568: 7.09},
}

#: Table 2 of the paper: the same error for other methods and for the paper's ("Ours").
PAPER_TABLE2: dict[str, dict[str, float]] = {
    "VRN": {"Stirling": 17.32, "Facescape": 20.89},
    "pix2face": {"Stirling": 11.74, "Facescape": 25.84},
    "3DDFA": {"Stirling": 8.82, "Facescape": 15.45},
    "3DDFA_v2": {"Stirling": 5.08, "Facescape": 13.52},
    "DF2Net": {"Stirling": 4.58, "Facescape": 8.14},
    "Ours (paper)": {"Stirling": 4.26, "Facescape": 7.09},
}

PAPER_UNIT_NOTE = (
    'The paper labels its figures "MSE (in mm)" of "averaged point-to-point errors" after ICP; '
    "a squared error is not in mm, so we read them as mean point-to-point distances in mm. "
    "They were measured on Stirling ESRC 3D / FaceScape scans, not on our data."
)

MISSING = "n/a"


def _is_missing(x) -> bool:
    return x is None or (isinstance(x, (float, np.floating)) and math.isnan(x))


def _md_cell(x, precision: int) -> str:
    if _is_missing(x):
        return MISSING
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.{precision}f}"
    return str(x).replace("|", "\\|").replace("\n", " ")


def _csv_cell(x) -> str:
    if _is_missing(x):
        return ""
    if isinstance(x, (np.floating, float)):
        return repr(float(x))
    if isinstance(x, np.integer):
        return str(int(x))
    return str(x)


@dataclass(frozen=True)
class Table:
    """A small result table.

    columns: header names; rows: one tuple per row, cells of str / int / float / None (NaN and
    None print as "n/a" in Markdown and as empty in CSV); title: Markdown heading; notes:
    lines printed under the Markdown table (not in the CSV).
    """

    columns: tuple[str, ...]
    rows: tuple[tuple, ...]
    title: str = ""
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        for i, r in enumerate(self.rows):
            if len(r) != len(self.columns):
                raise ValueError(
                    f"table row {i} has {len(r)} cells for {len(self.columns)} columns"
                )

    @staticmethod
    def from_records(
        records: Sequence[Mapping],
        columns: Sequence[str] | None = None,
        title: str = "",
        notes: Sequence[str] = (),
    ) -> Table:
        """Rows from dicts; columns default to the keys in first-seen order (missing -> n/a)."""
        if columns is None:
            columns = list(dict.fromkeys(k for r in records for k in r))
        rows = tuple(tuple(r.get(c) for c in columns) for r in records)
        return Table(tuple(columns), rows, title, tuple(notes))

    def to_markdown(self, precision: int = 2) -> str:
        """GitHub Markdown: optional heading, the table (numbers right-aligned), the notes."""
        out = []
        if self.title:
            out += [f"### {self.title}", ""]
        header = [_md_cell(c, precision) for c in self.columns]
        numeric = [
            bool(self.rows)
            and all(
                isinstance(r[j], (int, float, np.number))
                and not isinstance(r[j], bool)
                or _is_missing(r[j])
                for r in self.rows
            )
            for j in range(len(self.columns))
        ]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
        for r in self.rows:
            out.append("| " + " | ".join(_md_cell(x, precision) for x in r) + " |")
        if self.notes:
            out.append("")
            out += [f"{n}" if n.startswith(("-", "*")) else f"*{n}*" for n in self.notes]
        return "\n".join(out) + "\n"

    def to_csv(self) -> str:
        """RFC 4180 CSV with a header row; floats at full precision."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for r in self.rows:
            w.writerow([_csv_cell(x) for x in r])
        return buf.getvalue()


def write_table(table: Table, md_path=None, csv_path=None, precision: int = 2) -> list[Path]:
    """Write the Markdown and/or CSV form of ``table`` atomically; returns the paths written."""
    if md_path is None and csv_path is None:
        raise ValueError("write_table needs md_path and/or csv_path")
    written = []
    for path, text in ((md_path, lambda: table.to_markdown(precision)), (csv_path, table.to_csv)):
        if path is None:
            continue
        with atomic_path(path) as tmp:
            tmp.write_text(text(), encoding="utf-8")
        written.append(Path(path))
    return written


def landmark_sweep_table(
    measured: Mapping[int, float | None],
    dataset: str = "Stirling",
    metric: str = "point-to-point mean (mm)",
    title: str = "Error against the number of landmarks (paper Table 1)",
) -> Table:
    """Table 1 layout: one row per landmark count, our measured value beside the paper's.

    measured: {landmark count: our value (None = not run)}; dataset: the paper's column to quote
    ("Stirling" or "Facescape"). Counts from either side appear, in increasing order.
    """
    if dataset not in PAPER_TABLE1:
        raise ValueError(f"dataset must be one of {sorted(PAPER_TABLE1)}, got {dataset!r}")
    paper = PAPER_TABLE1[dataset]
    counts = sorted(set(paper) | {int(k) for k in measured})
    rows = tuple((n, measured.get(n), paper.get(n)) for n in counts)
    return Table(
        ("landmarks", f"ours: {metric}", f"{PAPER_COLUMN}: {dataset}"),
        rows,
        title,
        (PAPER_UNIT_NOTE,),
    )


def comparison_table(
    measured: Mapping[str, float | None],
    dataset: str = "Stirling",
    metric: str = "point-to-point mean (mm)",
    title: str = "Comparison of methods (paper Table 2)",
) -> Table:
    """Table 2 layout: one row per method; our measurements (e.g. this pipeline, the
    factorisation baseline) beside the paper's published figure for that method, if any."""
    if dataset not in ("Stirling", "Facescape"):
        raise ValueError(f"dataset must be Stirling or Facescape, got {dataset!r}")
    methods = list(measured) + [m for m in PAPER_TABLE2 if m not in measured]
    rows = tuple((m, measured.get(m), PAPER_TABLE2.get(m, {}).get(dataset)) for m in methods)
    return Table(
        ("method", f"ours: {metric}", f"{PAPER_COLUMN}: {dataset}"), rows, title, (PAPER_UNIT_NOTE,)
    )


def _save_figure(fig, path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)
    return Path(path)


def plot_landmark_sweep(
    measured: Mapping[int, float | None],
    path,
    dataset: str | None = "Stirling",
    ylabel: str = "point-to-point error (mm)",
    title: str = "",
) -> Path:
    """Grouped bar chart of error against landmark count (ours, and the paper's figure for
    ``dataset`` labelled as not measured on our data; ``dataset=None`` leaves it out). PNG."""
    from matplotlib.figure import Figure

    paper = PAPER_TABLE1[dataset] if dataset is not None else {}
    counts = sorted(set(paper) | {int(k) for k in measured})
    x = np.arange(len(counts))
    ours = [np.nan if _is_missing(measured.get(n)) else float(measured[n]) for n in counts]
    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    ax = fig.add_subplot()
    width = 0.4 if paper else 0.8
    ax.bar(x - (width / 2 if paper else 0), ours, width, label="ours", color="tab:blue")
    if paper:
        pv = [paper.get(n, np.nan) for n in counts]
        ax.bar(
            x + width / 2,
            pv,
            width,
            label=f"{PAPER_COLUMN} ({dataset})",
            color="tab:gray",
            hatch="//",
            alpha=0.6,
        )
    ax.set_xticks(x, [str(n) for n in counts])
    ax.set_xlabel("landmarks")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_pose_errors(
    per_frame: Mapping[str, Sequence[float]],
    path,
    ylabel: str = "rotation error (deg)",
    title: str = "",
) -> Path:
    """One line per series (e.g. method or landmark count) of a per-frame error. PNG."""
    from matplotlib.figure import Figure

    if not per_frame:
        raise ValueError("plot_pose_errors needs at least one series")
    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    ax = fig.add_subplot()
    for name, ys in per_frame.items():
        ys = np.asarray(ys, dtype=np.float64)
        if ys.ndim != 1:
            raise ValueError(f"series {name!r} must be 1-D per-frame values, got {ys.shape}")
        ax.plot(np.arange(len(ys)), ys, marker="o", markersize=3, label=str(name))
    ax.set_xlabel("frame")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save_figure(fig, path)
