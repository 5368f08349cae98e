"""Training throughput benchmark: forward + backward per step, each preset, with and without
the bundle-adjustment layer.

    python bench/train.py [--presets tiny,small,paper] [--steps 5] [--threads 1]
                          [--paper-frames 61]

Inputs are synthetic and seeded (no rendering needed): random images at the preset's
resolution, and landmarks of a synthetic face seen from a yaw arc
(:func:`facesfm.solvers.synthetic.make_face_problem`, 1 px noise) as the landmark input of the
stage-2 loss (``landmark_source = "gt"``), so the BA layer solves a realistic problem. A
sample has the preset's window of frames (the paper preset BAs whole sequences:
``--paper-frames``, 61 = -60..60 degrees every 2 degrees). One warm-up step, then the median
over ``--steps`` steps of ``loss.backward()`` wall time. Reports sequences per second (stage
2, with the BA layer and with learned poses only, i.e. the BA share of a step) and frames per
second (stage 1).

Writes bench/results/train.json and bench/results/train.md (atomically).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from facesfm.data.dataset import SequenceSample
from facesfm.io import atomic_path, write_json
from facesfm.solvers.synthetic import make_face_problem
from facesfm.training.config import preset_config
from facesfm.training.landmarks import LandmarkTask
from facesfm.training.loop import seed_everything
from facesfm.training.sfm import SfmTask

RESULTS = Path(__file__).resolve().parent / "results"


def synthetic_batch(
    batch: int, frames: int, size: int, landmarks: int, seed: int = 0
) -> tuple[SequenceSample, torch.Tensor]:
    """A (batch, frames, ...) sample with random images and consistent synthetic landmarks,
    and the true ``cam_T_world`` (frames, 4, 4) of the synthetic arc."""
    g = torch.Generator().manual_seed(seed)
    # consecutive frames 2 degrees apart, like the rendered sequences
    face = make_face_problem(
        frames=frames,
        landmarks=landmarks,
        seed=seed,
        noise_px=1.0,
        yaw_deg=float(frames - 1),
        focal_px=500.0 * size / 384,
        size_px=size,
        dtype=torch.float32,
    )
    p = face.problem
    rep = lambda x: x[None].expand(batch, *x.shape).clone()
    return SequenceSample(
        images=torch.rand(batch, frames, 3, size, size, generator=g),
        depth=torch.full((batch, frames, 1, size, size), float("nan")),  # never read
        mask=torch.ones(batch, frames, 1, size, size, dtype=torch.bool),
        K=rep(p.K[0]),
        cam_T_world=torch.full((batch, frames, 4, 4), float("nan")),  # never read
        uv=rep(p.uv),
        visible=rep(p.weight > 0),
        xyz=rep(face.points.float()),
        frames=rep(torch.arange(frames)),
        name=["synthetic"] * batch,
    ), face.truth.poses


def start_posenet_at(task, face_poses: torch.Tensor) -> None:
    """Set PoseNet's output bias to the true consecutive motion of the synthetic arc, as a
    partly trained network would predict: from the untrained network's zero motion the BA
    problem has no baseline (the per-frame depth scales are then unobservable and the solver
    rightly refuses), which would time a failing solve instead of a converging one."""
    from facesfm.geometry.camera import invert_pose
    from facesfm.geometry.se3 import so3_log

    rel = (face_poses[1] @ invert_pose(face_poses[0])).double()
    pc = task.model.pose.cfg
    with torch.no_grad():
        task.model.pose.head.bias.copy_(
            torch.cat(
                [so3_log(rel[:3, :3]) / pc.rotation_unit_rad, rel[:3, 3] / pc.translation_unit_mm]
            ).float()
        )


def time_steps(task, batch, steps: int) -> tuple[float, dict]:
    """Median seconds of one forward + backward, after one warm-up step."""
    times, metrics = [], {}
    for i in range(steps + 1):
        task.model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss, metrics = task.loss(task.model, batch)
        loss.backward()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), {k: float(v) for k, v in metrics.items()}


def bench_preset(name: str, steps: int, paper_frames: int) -> list[dict]:
    cfg = preset_config(name, {"sfm": {"landmark_source": "gt"}})
    frames = cfg.data.window or paper_frames
    B, S, N = cfg.optim.batch_size, cfg.data.image_size, cfg.data.landmarks
    batch, face_poses = synthetic_batch(B, frames, S, N)
    rows = []
    for ba in (True, False):
        c = preset_config(name, {"sfm": {"landmark_source": "gt", "ba": {"enabled": ba}}})
        seed_everything(0)
        task = SfmTask(c)
        start_posenet_at(task, face_poses)
        sec, m = time_steps(task, batch, steps)
        rows.append(
            {
                "preset": name,
                "stage": "sfm",
                "ba": ba,
                "batch": B,
                "frames": frames,
                "size": S,
                "landmarks": N,
                "step_s": sec,
                "sequences_per_s": B / sec,
                "frames_per_s": B * frames / sec,
                # the classical layer's gradient is its depth scale: no backward mode applies
                "ba_backward": "classical" if c.sfm.ba.parameterization == "classical"
                else c.sfm.ba.backward,
                "ba_rms_px": m.get("ba_rms_px"),
                "ba_failures": m.get("ba_failures"),
            }
        )
        print(
            f"{name:6s} sfm  BA={'on ' if ba else 'off'} {B}x{frames}x{S}px N={N}: "
            f"{sec:7.3f} s/step  {B / sec:7.3f} seq/s",
            flush=True,
        )
    seed_everything(0)
    lt = LandmarkTask(cfg)
    fb, _ = synthetic_batch(B, 1, S, N)
    sec, _ = time_steps(lt, fb, steps)
    rows.append(
        {
            "preset": name,
            "stage": "landmarks",
            "ba": None,
            "batch": B,
            "frames": 1,
            "size": S,
            "landmarks": N,
            "step_s": sec,
            "sequences_per_s": None,
            "frames_per_s": B / sec,
        }
    )
    print(
        f"{name:6s} landmarks {B}x{S}px N={N}: {sec:7.3f} s/step  {B / sec:7.2f} frames/s",
        flush=True,
    )
    return rows


def to_markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Training throughput (forward + backward, CPU)",
        "",
        (
            f"{meta['cpu']}, torch {meta['torch']}, {meta['threads']} thread(s), median of "
            f"{meta['steps']} steps after a warm-up; synthetic seeded inputs (see bench/train.py)."
        ),
        "",
        (
            "| preset | stage | BA layer | batch x frames x px | N | s/step | sequences/s | "
            "frames/s | BA share |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["preset"], r["stage"], r["ba"]): r for r in rows}
    for r in rows:
        share = ""
        if r["stage"] == "sfm" and r["ba"]:
            off = by.get((r["preset"], "sfm", False))
            if off:
                share = f"{1 - off['step_s'] / r['step_s']:.0%}"
        sps = "" if r["sequences_per_s"] is None else f"{r['sequences_per_s']:.3f}"
        ba = "" if r["ba"] is None else ("on (" + r["ba_backward"] + ")" if r["ba"] else "off")
        lines.append(
            f"| {r['preset']} | {r['stage']} | {ba} | {r['batch']} x {r['frames']} x "
            f"{r['size']} | {r['landmarks']} | {r['step_s']:.3f} | {sps} | "
            f"{r['frames_per_s']:.2f} | {share} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="tiny")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--paper-frames", type=int, default=61)
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    for name in a.presets.split(","):
        rows += bench_preset(name.strip(), a.steps, a.paper_frames)
    meta = {
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": a.threads,
        "steps": a.steps,
        "python": sys.version.split()[0],
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    out = Path(a.out)
    write_json(out / "train.json", {"meta": meta, "rows": rows})
    with atomic_path(out / "train.md") as tmp:
        tmp.write_text(to_markdown(rows, meta))
    print(f"wrote {out / 'train.json'} and {out / 'train.md'}")


if __name__ == "__main__":
    main()
