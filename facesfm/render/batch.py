"""``facesfm render``: render many subjects x sequences, optionally in parallel processes.

Output layout::

    <out>/dataset.json            {"format": "facesfm-dataset", "version": 1,
                                   "sequences": [{"name", "path", "subject", "sequence",
                                                  "face_seed", "seed", "frames",
                                                  "mean_visible"}], "config": BatchConfig}
    <out>/<subject>_<seq>/...     one sequence folder each (facesfm.data.format), e.g.
                                  00003_01 = subject 3, sequence 1

Seeds: subject s gets face seed ``derive_seed(seed, 1, s)``, its sequence q gets the sequence
seed ``derive_seed(seed, 2, s, q)`` (trajectory jitter, lighting, background). Each sequence is
written atomically; dataset.json is written last.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesfm.config import from_dict, load_yaml, to_dict
from facesfm.data.format import load_sequence
from facesfm.errors import InputError
from facesfm.faces.builtin import BuiltinFaceModel
from facesfm.faces.ict import ICTFaceModel
from facesfm.faces.mesh import MeshFaceModel
from facesfm.faces.types import LANDMARK_COUNTS
from facesfm.geometry.camera import intrinsics
from facesfm.io import write_json
from facesfm.paths import find_ict_dir
from facesfm.render.config import APPEARANCE_PRESETS, BatchConfig, RenderConfig
from facesfm.render.preview import contact_sheet
from facesfm.render.trajectory import VARIED

__all__ = [
    "BatchResult",
    "build_batch_config",
    "derive_seed",
    "make_face_model",
    "render_batch",
    "sequence_name",
]


def derive_seed(*keys: int) -> int:
    """A 32-bit seed from integer keys (master seed, subject, sequence)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(1)[0])


def sequence_name(subject: int, sequence: int) -> str:
    return f"{subject:05d}_{sequence:02d}"


def _parse_size(size: str) -> tuple[int, int]:
    s = str(size).lower().strip()
    try:
        if "x" in s:
            w, h = s.split("x")
            return int(w), int(h)
        return int(s), int(s)
    except ValueError:
        raise InputError(f"--size {size}: expected N or WxH, e.g. 384 or 640x480") from None


def _parse_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in str(text).replace(":", ",").split(","))
    except ValueError:
        raise InputError(f"--yaw-range {text}: expected MIN,MAX in degrees, e.g. -60,60") from None
    if not hi >= lo:
        raise InputError(f"--yaw-range {text}: MAX must be >= MIN")
    return lo, hi


def build_batch_config(config: str | Path | None = None, **options) -> BatchConfig:
    """The batch config: defaults, then the YAML file ``config``, then the command-line
    ``options`` that are not None (faces, mesh, units, orient, ict_dir, subjects,
    sequences_per_subject, seed, workers, landmarks, frames, yaw_range "MIN,MAX", step,
    size "N" or "WxH", focal, vary_trajectory: True turns on the per-sequence trajectory
    variation :data:`facesfm.render.trajectory.VARIED`, vary_appearance: True turns on the
    appearance randomisation :data:`facesfm.render.config.VARIED_APPEARANCE`, appearance: the
    name of one of :data:`facesfm.render.config.APPEARANCE_PRESETS` instead). Raises
    InputError naming the option or file."""
    base = load_yaml(BatchConfig, config) if config is not None else BatchConfig()
    d = to_dict(base)
    r, t = d["render"], d["render"]["trajectory"]
    opts = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(opts) - {
        "faces", "mesh", "units", "scale", "orient", "ict_dir", "subjects",
        "sequences_per_subject",
        "seed", "workers", "landmarks", "frames", "yaw_range", "step", "size", "focal",
        "allow_untextured", "vary_trajectory", "vary_appearance", "appearance"})
    if unknown:
        raise TypeError(f"build_batch_config: unknown options {unknown}")
    for k in ("faces", "mesh", "units", "scale", "orient", "ict_dir", "subjects",
              "sequences_per_subject", "seed", "workers", "allow_untextured"):
        if k in opts:
            d[k] = str(opts[k]) if k in ("mesh", "ict_dir") else opts[k]
    if "landmarks" in opts:
        if opts["landmarks"] not in LANDMARK_COUNTS:
            raise InputError(
                f"--landmarks {opts['landmarks']}: choose one of {list(LANDMARK_COUNTS)}"
            )
        r["landmarks"] = opts["landmarks"]
    if "frames" in opts and "step" in opts:
        raise InputError("--frames and --step both given: use one of them")
    if "frames" in opts:
        if opts["frames"] < 1:
            raise InputError(f"--frames must be >= 1, got {opts['frames']}")
        t["frames"] = opts["frames"]
    if "step" in opts:
        if not opts["step"] > 0:
            raise InputError(f"--step must be > 0 degrees, got {opts['step']}")
        t["step"], t["frames"] = opts["step"], None
    if "yaw_range" in opts:
        t["yaw_min"], t["yaw_max"] = _parse_range(opts["yaw_range"])
    if opts.get("vary_trajectory"):
        t.update(VARIED)
    if opts.get("vary_appearance") and opts.get("appearance", "varied") != "varied":
        raise InputError("--vary-appearance and another appearance preset both given")
    preset = "varied" if opts.get("vary_appearance") else opts.get("appearance")
    if preset is not None:
        if preset not in APPEARANCE_PRESETS:
            raise InputError(f"appearance preset {preset!r}: choose one of "
                             f"{list(APPEARANCE_PRESETS)}")
        for section, values in APPEARANCE_PRESETS[preset].items():
            r["appearance"][section].update(values)
    if "size" in opts:
        r["width"], r["height"] = _parse_size(opts["size"])
    if "focal" in opts:
        if not (np.isfinite(opts["focal"]) and opts["focal"] > 0):
            raise InputError(f"--focal must be a finite number > 0 px, got {opts['focal']}")
        r["focal"] = opts["focal"]
    return from_dict(BatchConfig, d, str(config) if config is not None else "options")


def _check_ict_dir(cfg: BatchConfig) -> None:
    if cfg.ict_dir is not None and not Path(cfg.ict_dir).exists():
        raise InputError(f"--ict-dir {cfg.ict_dir}: folder not found")


HEAD_SIZE_MM = (80.0, 600.0)  # a face-only scan to a head with neck and shoulders


def make_face_model(cfg: BatchConfig):
    """The FaceModel named by ``cfg.faces`` (checks its data now: InputError if unusable)."""
    if cfg.faces == "builtin":
        return BuiltinFaceModel()
    if cfg.faces == "ict":
        _check_ict_dir(cfg)
        return ICTFaceModel(find_ict_dir(cfg.ict_dir))
    model = MeshFaceModel(cfg.mesh, units=cfg.units, orient=cfg.orient, scale=cfg.scale,
                          require_texture=not cfg.allow_untextured)
    mesh, _ = model.sample(0)
    size = float(np.ptp(np.asarray(mesh.vertices), axis=0).max())
    lo, hi = HEAD_SIZE_MM
    if not lo <= size <= hi:
        raise InputError(
            f"{cfg.mesh}: read in {cfg.units}" + (f" x {cfg.scale:g}" if cfg.scale != 1 else "")
            + f", it is {size:.0f} mm across, not a head's size ({lo:g}-{hi:g} mm); give the "
            f"file's unit with --units or a factor to mm with --scale")
    if len(mesh.landmark_vertices) < cfg.render.landmarks:
        raise InputError(
            f"{cfg.mesh}: {len(mesh.landmark_vertices)} usable vertices, fewer than "
            f"--landmarks {cfg.render.landmarks}; choose a smaller count"
        )
    return model


@dataclass(frozen=True)
class BatchResult:
    """Summary of a batch: out folder, number of sequences and frames, wall seconds,
    frames per second, mean visible landmarks per frame, and each sequence's entry."""

    out: Path
    sequences: int
    frames: int
    seconds: float
    fps: float
    mean_visible: float
    entries: list


# -- worker side: each process owns one face model and one renderer ----------------------
_STATE: dict = {}


def _init_worker(cfg_dict: dict, model=None) -> None:
    import os

    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    cfg = from_dict(BatchConfig, cfg_dict)
    _STATE.clear()
    _STATE.update(cfg=cfg, model=model if model is not None else make_face_model(cfg),
                  renderer=None, face=None)


def _run_job(job: tuple[int, int, str, bool]) -> dict:
    from facesfm.render.renderer import FaceRenderer
    from facesfm.render.writer import render_sequence

    subject, seq, out, overwrite = job
    cfg: BatchConfig = _STATE["cfg"]
    rc = cfg.render
    if _STATE["renderer"] is None:
        _STATE["renderer"] = FaceRenderer(
            rc.width, rc.height, intrinsics(rc.focal, rc.width, rc.height)
        )
    face_seed = derive_seed(cfg.seed, 1, subject)
    if _STATE["face"] is None or _STATE["face"][0] != subject:
        mesh, coeffs = _STATE["model"].sample(face_seed, expression=rc.expression)
        _STATE["face"] = (subject, mesh, coeffs)
    _, mesh, coeffs = _STATE["face"]
    seed = derive_seed(cfg.seed, 2, subject, seq)
    info = {"source": cfg.faces, "name": mesh.name, "seed": face_seed, "coeffs": coeffs}
    if cfg.faces == "mesh":
        info["mesh"] = str(cfg.mesh)
    name = sequence_name(subject, seq)
    res = render_sequence(mesh, Path(out) / name, rc, seed=seed, face_info=info,
                          overwrite=overwrite, renderer=_STATE["renderer"])
    return {
        "name": name,
        "path": name,
        "subject": subject,
        "sequence": seq,
        "face_seed": face_seed,
        "seed": seed,
        "frames": res.frames,
        "mean_visible": float(np.mean(res.visible_per_frame)),
        "seconds": res.seconds,
    }


def _close_worker() -> None:
    if _STATE.get("renderer") is not None:
        _STATE["renderer"].close()
    _STATE.clear()


def _finished(out: Path, cfg: BatchConfig, subject: int, seq: int) -> dict | None:
    """The dataset entry of sequence (subject, seq) if ``out`` already holds it complete (a
    sequence folder is renamed into place only when complete) and rendered with ``cfg``;
    None if it is not there; InputError if it was rendered with other settings."""
    name = sequence_name(subject, seq)
    meta_path = out / name / "sequence.json"
    if not meta_path.is_file():
        return None
    face_seed, seed = derive_seed(cfg.seed, 1, subject), derive_seed(cfg.seed, 2, subject, seq)
    try:
        meta = json.loads(meta_path.read_text())
        # a section or field added since the sequence was rendered takes its default, which
        # renders as before it existed
        recorded = to_dict(from_dict(RenderConfig, meta["config"], "sequence.json config"))
        same = (meta["seed"] == seed and meta["face"]["seed"] == face_seed
                and meta["face"]["source"] == cfg.faces and recorded == to_dict(cfg.render))
    except (json.JSONDecodeError, KeyError, TypeError, InputError):
        same = False
    if not same:
        raise InputError(f"--resume: {out / name} was rendered with other settings or seeds; "
                         f"render into another folder, or --overwrite")
    vis = load_sequence(out / name, check_files=True).visible
    return {"name": name, "path": name, "subject": subject, "sequence": seq,
            "face_seed": face_seed, "seed": seed, "frames": int(vis.shape[0]),
            "mean_visible": float(np.mean(vis.sum(1))), "seconds": 0.0}


def render_batch(cfg: BatchConfig, out: str | Path, overwrite: bool = False,
                 progress: bool = True, echo=print, resume: bool = False) -> BatchResult:
    """Render ``cfg.subjects x cfg.sequences_per_subject`` sequences into ``out``.

    An existing non-empty ``out`` is an InputError unless ``overwrite`` (then sequences of
    the same name are replaced, each atomically) or ``resume`` (then the sequences already
    there, complete and of the same settings, are kept and only the others rendered).
    Prints a summary through ``echo``.
    """
    from tqdm import tqdm

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output path exists and is not a folder: {out}")
    if overwrite and resume:
        raise InputError("--overwrite and --resume: choose one")
    if out.is_dir() and any(out.iterdir()) and not (overwrite or resume):
        raise InputError(f"output folder exists and is not empty: {out} "
                         "(pass --resume to continue it, --overwrite to replace its sequences)")
    jobs = [(s, q, str(out), overwrite) for s in range(cfg.subjects)
            for q in range(cfg.sequences_per_subject)]
    kept = []
    if resume and out.is_dir():
        for job in list(jobs):
            e = _finished(out, cfg, job[0], job[1])
            if e is not None:
                kept.append(e)
                jobs.remove(job)
        echo(f"resuming {out}: {len(kept)} finished sequence(s) kept, {len(jobs)} to render")
    workers = max(1, min(cfg.workers, len(jobs)))
    # fail early, in this process, on unusable face data; workers build their own model
    model = make_face_model(cfg) if workers == 1 or cfg.faces == "mesh" else None
    if model is None and cfg.faces == "ict":
        _check_ict_dir(cfg)
        find_ict_dir(cfg.ict_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    entries = list(kept)
    bar = tqdm(total=len(jobs), unit="seq", desc="render", disable=not progress,
               file=sys.stderr)
    try:
        if workers == 1:
            _init_worker(to_dict(cfg), model)
            try:
                for job in jobs:
                    entries.append(_run_job(job))
                    bar.update(1)
            finally:
                _close_worker()
        else:
            ctx = mp.get_context("spawn")  # a fresh process per worker: no shared GL state
            with ctx.Pool(workers, initializer=_init_worker, initargs=(to_dict(cfg),)) as pool:
                # contiguous chunks keep a subject's sequences on one worker (one sample())
                chunk = max(1, cfg.sequences_per_subject)
                for e in pool.imap_unordered(_run_job, jobs, chunksize=chunk):
                    entries.append(e)
                    bar.update(1)
    except BaseException:
        # finished sequences are complete (each is renamed into place) and are kept; a folder
        # this call created and never filled is not left behind
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    entries.sort(key=lambda e: (e["subject"], e["sequence"]))
    for e in entries:
        e.pop("seconds")
    # a look at what was rendered: the first sequence's frames with their landmarks
    preview = contact_sheet(out / entries[0]["path"], out / "preview.png") if entries else None
    write_json(out / "dataset.json", {
        "format": "facesfm-dataset",
        "version": 1,
        "sequences": entries,
        "config": to_dict(cfg),
    })
    frames = sum(e["frames"] for e in entries)
    mean_vis = float(sum(e["mean_visible"] * e["frames"] for e in entries) / max(frames, 1))
    res = BatchResult(out=out, sequences=len(entries), frames=frames, seconds=seconds,
                      fps=frames / seconds if seconds > 0 else float("nan"),
                      mean_visible=mean_vis, entries=entries)
    echo(f"rendered {res.sequences} sequence(s), {res.frames} frames in {seconds:.1f} s "
         f"({res.fps:.1f} frames/s, {workers} worker(s)); "
         f"mean visible landmarks per frame {mean_vis:.1f} of {cfg.render.landmarks}")
    echo(f"output: {out} (dataset.json lists the sequences)"
         + (f"; preview {preview}" if preview is not None else ""))
    return res
