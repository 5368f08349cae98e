"""Training throughput benchmark: forward + backward per step, each preset, with and without
the bundle-adjustment layer.

    python bench/train.py [--presets tiny,small,paper] [--steps 5] [--warmup 1] [--threads 1]
                          [--paper-frames 61]

Inputs are synthetic and seeded (no rendering needed): random images at the preset's
resolution, and landmarks of a synthetic face seen from a yaw arc
(:func:`facesfm.solvers.synthetic.make_face_problem`, 1 px noise) as the landmark input of the
stage-2 loss (``landmark_source = "gt"``), so the BA layer solves a realistic problem. A
sample has the preset's window of frames (the paper preset BAs whole sequences:
``--paper-frames``, 61 = -60..60 degrees every 2 degrees). ``--warmup`` steps (1), then the
median over ``--steps`` steps of ``loss.backward()`` wall time. Reports sequences per second
(stage 2, with the BA layer and with learned poses only, i.e. the BA share of a step), frames
per second (stage 1) and the peak resident memory of each row's steps (Linux: the peak is
reset before each row through /proc/self/clear_refs; elsewhere the process's peak so far).

Writes bench/results/train.json and bench/results/train.md (atomically).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import run_meta, write_results

from facesfm.data.dataset import SequenceSample
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


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux); False where the peak cannot be reset."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_gb() -> float:
    """Peak resident memory (GB) since the last reset (VmHWM), else of the whole process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def time_steps(task, batch, steps: int, warmup: int = 1) -> tuple[float, dict]:
    """Median seconds of one forward + backward over ``steps`` steps after ``warmup``; the
    metrics of the last step get ``peak_rss_gb`` of all of them."""
    times, metrics = [], {}
    reset_peak_rss()
    for i in range(steps + warmup):
        task.model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss, metrics = task.loss(task.model, batch)
        loss.backward()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), {**{k: float(v) for k, v in metrics.items()},
                                      "peak_rss_gb": peak_rss_gb()}


def bench_preset(name: str, steps: int, paper_frames: int, warmup: int = 1) -> list[dict]:
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
        sec, m = time_steps(task, batch, steps, warmup)
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
                "checkpoint_frames": c.sfm.checkpoint_frames,
                "peak_rss_gb": m["peak_rss_gb"],
            }
        )
        print(
            f"{name:6s} sfm  BA={'on ' if ba else 'off'} {B}x{frames}x{S}px N={N}: "
            f"{sec:7.3f} s/step  {B / sec:7.3f} seq/s  peak {m['peak_rss_gb']:.1f} GB",
            flush=True,
        )
    seed_everything(0)
    lt = LandmarkTask(cfg)
    fb, _ = synthetic_batch(B, 1, S, N)
    sec, lm_m = time_steps(lt, fb, steps, warmup)
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
            "peak_rss_gb": lm_m["peak_rss_gb"],
        }
    )
    print(
        f"{name:6s} landmarks {B}x{S}px N={N}: {sec:7.3f} s/step  {B / sec:7.2f} frames/s",
        flush=True,
    )
    return rows


def _gb(r: dict) -> str:
    return "" if r.get("peak_rss_gb") is None else f"{r['peak_rss_gb']:.1f}"


def to_markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Training throughput (forward + backward, CPU)",
        "",
        (
            f"{meta['cpu']}, torch {meta['torch']}, {meta['threads']} thread(s), median of "
            f"{meta['steps']} step(s) after {meta.get('warmup', 1)} warm-up step(s); synthetic "
            f"seeded inputs (see bench/train.py). Peak RSS: the process's peak resident memory "
            f"over the row's steps. Checkpointed: stage 2 with activation checkpointing over "
            f"chunks of that many frames (sfm.checkpoint_frames)."
        ),
        "",
        (
            "| preset | stage | BA layer | batch x frames x px | N | s/step | sequences/s | "
            "frames/s | BA share | peak RSS (GB) | checkpointed |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
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
            f"{r['frames_per_s']:.2f} | {share} | {_gb(r)} | {r.get('checkpoint_frames') or ''} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="tiny")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--paper-frames", type=int, default=61)
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    for name in a.presets.split(","):
        rows += bench_preset(name.strip(), a.steps, a.paper_frames, a.warmup)
    meta = run_meta(threads=a.threads, steps=a.steps, warmup=a.warmup)
    write_results(a.out, "train", {"meta": meta, "rows": rows}, to_markdown(rows, meta))


if __name__ == "__main__":
    main()
