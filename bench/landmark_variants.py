"""The two LandmarkNet variants side by side: the paper's regression CNN and our heatmap
detector, trained from scratch on the same faces with the same budget, scored on the same
held-out faces.

    python bench/landmark_variants.py --data TRAIN --val VAL --out RUNS
                                      [--held-out DIR] [--max-steps 6000] [--threads 2]

Trains each variant into ``RUNS/<variant>`` with ``facesfm train landmarks`` (a finished run
is read, an unfinished one resumed; a run whose stored config differs from the one below is
refused). Both runs share the ``small`` preset's data settings (128 px input, 200 landmarks,
augmentation, 70% face-crop samples, 7 fused crop views at inference) and one optimiser
setting (Adam (0.9, 0.99), batch 8, lr 1e-3 with a cosine decay over ``--max-steps``, seed 0);
they differ only in the network and its position loss:

* ``paper``: grayscale, four 3x3 conv + max-pool layers (32-64-96-128), three fully connected
  layers (256-256-3N), squared error of the regressed coordinates (the paper's loss);
* ``heatmap``: the shipped detector's architecture (residual encoder 16-32-64-96, top-down
  path to stride 4, soft-argmax, local visibility), Gaussian negative log-likelihood with its
  predicted spread.

Both add the same visibility cross-entropy (weight 0.1). The held-out faces are 20 ICT faces x
61 frames (master seed 3000, never used in training; rendered here unless ``--held-out``
names a folder with them), scored the way ``facesfm solve`` detects
(:func:`facesfm.eval.detector.detector_errors`). Throughput: forward + backward of one
training batch of each variant, alternated in this process (median of ``--repeats``), so the
ratio is from one run. Writes bench/results/landmark_variants.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from common import merge, run_meta, write_results

RESULTS = Path(__file__).resolve().parent / "results"

#: the shared settings (on top of the small preset)
COMMON = {
    "seed": 0,
    "optim": {"batch_size": 8, "lr": 1e-3, "lr_schedule": "cosine"},
    "landmarks": {"face_crop": 0.7},
}
VARIANTS = {
    "paper": ({"landmarks": {"variant": "paper", "in_channels": 1,
                             "channels": [32, 64, 96, 128], "fc_dims": [256, 256]}},
              "paper: regression CNN (4 conv + pool, 3 FC)"),
    "heatmap": ({"landmarks": {"variant": "heatmap"}},
                "heatmap: residual encoder + soft-argmax + spread"),
}


def _differences(want: dict, have: dict, prefix: str = "") -> list[str]:
    """Keys of ``want`` whose value in ``have`` differs (lists and tuples compare alike)."""
    out = []
    for k, v in want.items():
        h = have.get(k) if isinstance(have, dict) else None
        if isinstance(v, dict):
            out += _differences(v, h or {}, f"{prefix}{k}.")
        elif (list(v) if isinstance(v, (list, tuple)) else v) != \
                (list(h) if isinstance(h, (list, tuple)) else h):
            out.append(f"{prefix}{k}: {h!r} (wanted {v!r})")
    return out


def _train(name: str, over: dict, args) -> Path:
    """The finished run of ``name`` (trained or resumed here when needed)."""
    from facesfm.training.entry import train_command

    run = args.out / name
    cfg = merge(merge(COMMON, over), {"optim": {"max_steps": args.max_steps}})
    stored = run / "config.yaml"
    if stored.is_file():
        diff = _differences(cfg, yaml.safe_load(stored.read_text()))
        if diff:
            raise SystemExit(f"{run} was trained with other settings: " + "; ".join(diff))
    summary = run / "summary.json"
    if summary.is_file() and json.loads(summary.read_text())["steps"] >= args.max_steps:
        return run
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(cfg, f)
    try:
        train_command("landmarks", args.data, str(run), preset="small", config=f.name,
                      val=args.val, resume=(run / "checkpoints" / "last.pt").is_file(),
                      threads=args.threads, progress=True)
    finally:
        Path(f.name).unlink()
    return run


def _curve(run: Path) -> list[dict]:
    """Validation after each epoch and at the end: step, mean px (validation frames), F1."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{"step": r["step"], "lm_mean_px": r["lm_mean_px"], "vis_f1": r["vis_f1"]}
            for r in rows if r["split"] == "val"]


def _throughput(runs: dict[str, Path], data: str, repeats: int) -> dict[str, float]:
    """Median seconds of one training step's forward + backward (batch of the run's size, its
    input size), the variants alternated so both see the same machine state."""
    from facesfm.config import from_dict
    from facesfm.data.dataset import collate_samples
    from facesfm.training.config import TrainConfig
    from facesfm.training.landmarks import LandmarkTask, landmark_datasets
    from facesfm.training.loop import seed_everything

    tasks, batches = {}, {}
    for name, run in runs.items():
        cfg = from_dict(TrainConfig, yaml.safe_load((run / "config.yaml").read_text()), str(run))
        seed_everything(0)
        tasks[name] = LandmarkTask(cfg)
        train, _ = landmark_datasets(cfg, data)
        batches[name] = collate_samples([train[i] for i in range(cfg.optim.batch_size)])
    times: dict[str, list[float]] = {n: [] for n in runs}
    for i in range(repeats + 2):
        for name, task in tasks.items():
            task.model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            loss, _ = task.loss(task.model, batches[name])
            loss.backward()
            if i >= 2:  # two warm-up rounds
                times[name].append(time.perf_counter() - t0)
    return {n: statistics.median(t) for n, t in times.items()}


def _plot(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    from facesfm.io import atomic_path

    fig = Figure(figsize=(9, 3.4), dpi=100)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for r in rows:
        steps = [c["step"] for c in r["validation_curve"]]
        ax1.plot(steps, [c["lm_mean_px"] for c in r["validation_curve"]], "o-", label=r["variant"])
        ax2.plot(steps, [c["vis_f1"] for c in r["validation_curve"]], "o-", label=r["variant"])
    ax1.set(xlabel=f"training step (batch {COMMON['optim']['batch_size']})", ylabel="mean error (px, 384 px frames)",
            yscale="log", title="landmark error, validation faces")
    ax2.set(xlabel=f"training step (batch {COMMON['optim']['batch_size']})", ylabel="visibility F1",
            title="visibility, validation faces")
    ax1.yaxis.set_major_formatter(ScalarFormatter())
    ax1.yaxis.set_minor_formatter(ScalarFormatter())
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="Training faces (a rendered ICT set).")
    ap.add_argument("--val", required=True, help="Validation faces (per-epoch curve).")
    ap.add_argument("--out", type=Path, required=True, help="Folder of the two runs.")
    ap.add_argument("--held-out", default=None,
                    help="Rendered held-out faces [default: render 20 ICT faces x 61 frames, "
                         "master seed 3000].")
    ap.add_argument("--ict-dir", default=None)
    ap.add_argument("--max-steps", type=int, default=6000)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from facesfm.data.dataset import label_rule
    from facesfm.eval.detector import HeldOut, detector_errors, render_held_out
    from facesfm.training.landmarks import load_landmark_net

    runs = {name: _train(name, over, args) for name, (over, _) in VARIANTS.items()}
    spec = HeldOut("ict", 3000, 20, 61)
    tmp = None
    held = args.held_out
    if held is None:
        tmp = tempfile.TemporaryDirectory()
        held = render_held_out(spec, Path(tmp.name) / "held_out", ict_dir=args.ict_dir,
                               workers=2, progress=True)
    held_cfg = json.loads((Path(held) / "dataset.json").read_text())["config"]
    if held_cfg.get("seed") != spec.seed:
        raise SystemExit(f"{held} was rendered with master seed {held_cfg.get('seed')}, "
                         f"not the held-out seed {spec.seed}")
    rule = label_rule(held)
    if rule != label_rule(args.data):
        raise SystemExit(f"{held} labels visibility by {rule}, the training data by "
                         f"{label_rule(args.data)}")

    step_s = _throughput(runs, args.data, args.repeats)
    rows = []
    for name, run in runs.items():
        net, _ = load_landmark_net(run / "checkpoints" / "last.pt")
        t0 = time.perf_counter()
        m = detector_errors(run / "checkpoints" / "last.pt", held)
        secs = time.perf_counter() - t0
        summary = json.loads((run / "summary.json").read_text())
        rows.append({
            "variant": name, "label": VARIANTS[name][1], "run": str(run),
            "parameters": sum(p.numel() for p in net.parameters()),
            "steps": summary["steps"], "train_seconds": summary["seconds"],
            "step_seconds": step_s[name], "held_out": m,
            "held_out_seconds_per_frame": secs / m["frames"],
            "validation_curve": _curve(run),
        })
        print(f"{name}: {m['lm_mean_px']:.2f} px mean, {m['lm_median_px']:.2f} median, "
              f"F1 {m['vis_f1']:.4f}", flush=True)
    if tmp is not None:
        tmp.cleanup()

    p, h = rows
    seqs = json.loads((Path(args.data) / "dataset.json").read_text())["sequences"]
    n_val = len(json.loads((Path(args.val) / "dataset.json").read_text())["sequences"])
    val_cap = yaml.safe_load((runs["heatmap"] / "config.yaml").read_text())["data"]["val_samples"]
    meta = run_meta(threads=args.threads, data=Path(args.data).name, val=Path(args.val).name,
                    data_sequences=len(seqs), data_frames=sum(q["frames"] for q in seqs),
                    val_sequences=n_val if val_cap is None else min(n_val, val_cap),
                    held_out={**spec.to_dict(), "folder": Path(held).name, "labels": rule},
                    max_steps=args.max_steps, shared=COMMON)
    write_results(RESULTS, "landmark_variants", {"meta": meta, "rows": rows},
                  _markdown(rows, meta, args))
    _plot(rows, RESULTS / "landmark_variants.png")
    print(f"paper / heatmap: mean error x{p['held_out']['lm_mean_px'] / h['held_out']['lm_mean_px']:.2f}, "
          f"step time x{p['step_seconds'] / h['step_seconds']:.2f}")
    return 0


def _rule_text(rule: dict) -> str:
    r = rule.get("facing_radius", 0.0)
    facing = f"surface patch within {r:g} mm" if r else "vertex normal"
    return (f"occlusion '{rule.get('occlusion')}' (depth tolerance "
            f"{rule.get('depth_tolerance')} mm), facing test on the {facing}")


def _markdown(rows: list[dict], meta: dict, args) -> str:
    p, h = rows
    ho = meta["held_out"]
    o = COMMON["optim"]
    lines = [
        ("# LandmarkNet variants: the paper's regression CNN against the heatmap detector "
         "(bench/landmark_variants.py)"),
        "",
        (f"Both trained from scratch on `{meta['data']}` ({meta['data_frames']} frames of "
         f"{meta['data_sequences']} ICT face sequences), "
         f"{args.max_steps} steps of batch {o['batch_size']} (lr {o['lr']:g}, "
         f"{o['lr_schedule']}), 128 px input, 200 landmarks, "
         "the same augmentation, face-crop samples and 7-view crop inference; they differ only "
         "in the network and the position loss (paper: squared error; heatmap: Gaussian NLL "
         f"with its spread). Held out: {h['held_out']['sequences']} ICT faces, "
         f"{h['held_out']['frames']} frames "
         f"(master seed {ho['seed']}, visibility labels: {_rule_text(ho['labels'])}), errors in the 384 px frames' "
         f"pixels over the visible landmarks. Commit {meta['commit']}, {meta['threads']} "
         "thread(s), one run each."),
        "",
        ("| variant | parameters | mean px | median px | p95 px | MSE px^2 | vis F1 "
         "| train step (s) | detection + loading (s/frame) |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["held_out"]
        lines.append(
            f"| {r['label']} | {r['parameters'] / 1e6:.2f} M | {m['lm_mean_px']:.2f} "
            f"| {m['lm_median_px']:.2f} | {m['lm_p95_px']:.2f} | {m['lm_mse_px2']:.2f} "
            f"| {m['vis_f1']:.4f} | {r['step_seconds']:.3f} "
            f"| {r['held_out_seconds_per_frame']:.3f} |")
    pm, hm = p["held_out"], h["held_out"]
    lines += [
        "",
        (f"paper / heatmap, same run: mean error x{pm['lm_mean_px'] / hm['lm_mean_px']:.2f}, "
         f"median x{pm['lm_median_px'] / hm['lm_median_px']:.2f}, training step time "
         f"x{p['step_seconds'] / h['step_seconds']:.2f} (forward + backward of one batch of "
         f"{o['batch_size']}, median of {args.repeats}, the two alternated)."),
        "",
    ]
    if "sigma_error_spearman" in hm:
        q = ", ".join(f"{x:.2f}" for x in hm["error_by_sigma_quartile"])
        lines += [
            (f"The heatmap detector's spread as a BA weight: rank correlation with the actual "
             f"error {hm['sigma_error_spearman']:.2f}; mean error by quartile of predicted "
             f"sigma, most confident first: {q} px (median sigma "
             f"{hm['sigma_median_px']:.2f} px). The paper variant predicts no spread: the BA "
             "weighs its landmarks by visibility only."),
            "",
        ]
    lines += [(f"Validation during training ({meta['val_sequences']} faces of "
               f"`{meta['val']}`, all frames, the same detection protocol):"), "",
              "| step | " + " | ".join(f"{r['variant']} mean px | {r['variant']} F1"
                                      for r in rows) + " |",
              "|---" * (1 + 2 * len(rows)) + "|"]
    for cp, ch in zip(p["validation_curve"], h["validation_curve"]):
        lines.append(f"| {cp['step']} | {cp['lm_mean_px']:.2f} | {cp['vis_f1']:.4f} "
                     f"| {ch['lm_mean_px']:.2f} | {ch['vis_f1']:.4f} |")
    lines += ["", "![validation curves](landmark_variants.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
