"""What the benchmarks record beside their figures, and how they write them.

The scripts here run as ``python bench/<name>.py`` (this folder is then first on sys.path).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

from facesfm.io import atomic_path, write_json
from facesfm.training.checkpoint import code_version


def commit() -> str:
    """The short commit the benchmark ran at (+ "-dirty" with uncommitted changes)."""
    v = code_version()
    if not v.get("git"):
        return "unknown"
    return v["git"][:7] + ("-dirty" if v.get("dirty") else "")


def run_meta(**extra) -> dict:
    """Machine, software, commit, time and the 1-minute load average at the end of the run
    (other work sharing the cores shows there), plus the benchmark's own settings."""
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "commit": commit(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        **extra,
    }


def write_results(out: Path | str, stem: str, payload: dict, markdown: str) -> None:
    """``out/<stem>.json`` and ``out/<stem>.md``, each written atomically."""
    out = Path(out)
    write_json(out / f"{stem}.json", payload)
    with atomic_path(out / f"{stem}.md") as tmp:
        tmp.write_text(markdown)
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")


def merge(a: dict, b: dict) -> dict:
    """``a`` with ``b``'s values on top, nested dicts merged key by key (config overrides)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
