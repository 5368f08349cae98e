"""Bundle-adjustment benchmark: every backend and the peers, one process, one table.

    python bench/ba.py [--repeats 5] [--threads 1] [--sizes 30x68,61x568,91x800] [--quick]
                       [--backends PREFIX,...] [--stem ba]

Video scale, without the slow references: ``--sizes 61x568,601x568 --depth-size ''
--backends 'ours LM implicit,ours LM no-grad,Ceres' --stem ba_video``.

Seeded synthetic face problems (facesfm.solvers.synthetic): cameras on a -60..+60 degree yaw
arc, f = 500 px, 384 x 384, 1 px noise, start perturbed by 3 deg / 1 cm / 5 mm. For each (F, N)
and backend: wall time to converge (median over interleaved repeats), iterations, final RMS
reprojection error (px, per observation 2-vector), peak memory (sampled RSS increase of this
process during the call), and, for differentiable backends, the backward time of a loss on the
refined poses w.r.t. the observed uv (and depths). Times are also given as ratios to the
fastest peer (the non-differentiable references: scipy trf and Ceres via pycolmap).

Writes bench/results/ba.json and bench/results/ba.md (atomically).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

from facesfm.io import atomic_path, write_json
from facesfm.solvers import (
    BackwardMode,
    LMSolver,
    Parameterization,
    ScipyReference,
    Window,
)
from facesfm.solvers.synthetic import make_face_problem, perturb_state

RESULTS = Path(__file__).resolve().parent / "results"


class PeakRSS:
    """Samples this process's resident set size in a thread; peak increase over the start."""

    def __init__(self, interval=0.002):
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self):
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.start = self._rss()
        self.peak = self.start
        self._stop = threading.Event()

        def run():
            while not self._stop.is_set():
                self.peak = max(self.peak, self._rss())
                time.sleep(self.interval)

        self._t = threading.Thread(target=run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())
        self.mb = (self.peak - self.start) / 2**20


def _loss(state):
    R = state.poses[:, :3, :3]
    # rotations only: gauge-invariant in both parameterisations
    w = torch.linspace(-1.0, 1.0, R.numel(), dtype=R.dtype).reshape(R.shape)
    return (w * R).sum()


# per-observation-object backends are slow (BA-NOTES): cap the problem size (F * N) and repeats
SLOW_CAP = {"theseus": (61 * 568, 1), "pypose": (30 * 68, 1)}


def backends(threads: int, size: int, with_slow: bool = True):
    """(name, solver, differentiable, is_peer, max_repeats) for a problem of F * N = size."""
    from facesfm.solvers.colmap_baseline import ColmapBaseline

    out = [
        ("ours LM implicit (default)", LMSolver(), True, False, None),
        ("ours LM truncated(5)", LMSolver(backward=BackwardMode.TRUNCATED), True, False, None),
        ("ours LM unroll", LMSolver(backward=BackwardMode.UNROLL), True, False, None),
        ("ours LM no-grad", LMSolver(backward=BackwardMode.NONE), False, False, None),
        ("scipy trf (reference)", ScipyReference(), False, True, None),
        ("Ceres DENSE_SCHUR (pycolmap)", ColmapBaseline(num_threads=threads), False, True, None),
    ]
    if with_slow:
        try:
            from facesfm.solvers.theseus_backend import LinearSolver, TheseusBackend

            cap, reps = SLOW_CAP["theseus"]
            if size <= cap:
                out.append(("Theseus LM CHOLMOD, implicit (GN step)",
                            TheseusBackend(linear_solver=LinearSolver.CHOLMOD), True, False, reps))
            if size <= SLOW_CAP["pypose"][0]:
                out.append(("Theseus LM dense, implicit (GN step)",
                            TheseusBackend(linear_solver=LinearSolver.DENSE), True, False, reps))
        except ImportError:
            pass
        try:
            from facesfm.solvers.pypose_backend import PyPoseBackend

            cap, reps = SLOW_CAP["pypose"]
            if size <= cap:
                out.append(("PyPose LM dense, implicit (ours)", PyPoseBackend(), True, False, reps))
        except ImportError:
            pass
    return out


def run_one(solver, problem, init, differentiable):
    uv = problem.uv.clone().requires_grad_(differentiable)
    depth = None
    if problem.depth is not None:
        depth = problem.depth.clone().requires_grad_(differentiable)
    p = problem.replace(uv=uv, depth=depth)
    gc.collect()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        res = solver.solve(p, init)
        t_fwd = time.perf_counter() - t0
        t_bwd = None
        if differentiable:
            t1 = time.perf_counter()
            _loss(res.state).backward()
            t_bwd = time.perf_counter() - t1
    return {
        "wall_s": t_fwd,
        "solve_only_s": float(res.timings.get("solve", t_fwd)),
        "backward_s": t_bwd,
        "iterations": int(res.iterations),
        "rms_px": float(res.rms_px),
        "final_cost": float(res.cost[-1]),
        "converged": bool(res.converged),
        "peak_mb": mem.mb,
    }


def bench_problem(label, sf, init, entries, repeats):
    rows = {name: [] for name, *_ in entries}
    skip = set()
    for rep in range(repeats):
        for name, solver, diff, _, max_reps in entries:
            if name in skip or (max_reps is not None and rep >= max_reps):
                continue
            try:
                rows[name].append(run_one(solver, sf.problem, init, diff))
            except Exception as e:  # noqa: BLE001 - a failing backend is reported, not fatal
                rows[name] = [{"error": f"{type(e).__name__}: {e}"}]
                skip.add(name)
        print(f"  [{label}] repeat {rep + 1}/{repeats} done", file=sys.stderr, flush=True)
    out = []
    for name, solver, diff, peer, _ in entries:
        runs = rows[name]
        if runs and "error" in runs[0]:
            out.append({"backend": name, "peer": peer, "error": runs[0]["error"]})
            continue
        med = lambda k, runs=runs: statistics.median(r[k] for r in runs)
        out.append(
            {
                "backend": name,
                "peer": peer,
                "differentiable": diff,
                "wall_s": med("wall_s"),
                "solve_only_s": med("solve_only_s"),
                "backward_s": med("backward_s") if diff else None,
                "iterations": runs[0]["iterations"],
                "rms_px": runs[0]["rms_px"],
                "final_cost": runs[0]["final_cost"],
                "converged": runs[0]["converged"],
                "peak_mb": max(r["peak_mb"] for r in runs),
                "repeats": len(runs),
                "wall_all_s": [r["wall_s"] for r in runs],
            }
        )
    peers = [r for r in out if r.get("peer") and "error" not in r]
    fastest = min(peers, key=lambda r: r["wall_s"]) if peers else None
    # the RMS reference: scipy's trust-region solver, or Ceres where scipy was not run
    ref = next((r for r in out if r["backend"].startswith("scipy") and "error" not in r),
               next((r for r in out if r["backend"].startswith("Ceres") and "error" not in r),
                    None))
    for r in out:
        if "error" in r:
            continue
        r["ratio_to_fastest_peer"] = r["wall_s"] / fastest["wall_s"] if fastest else None
        r["rms_rel_to_reference"] = (r["rms_px"] - ref["rms_px"]) / ref["rms_px"] if ref else None
    return out, fastest


def load_average():
    try:
        return os.getloadavg()
    except OSError:
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch and Ceres threads")
    ap.add_argument("--sizes", default="30x68,61x568,91x800")
    ap.add_argument("--depth-size", default="30x68", help="(F,N) of the eq.-2 problem, or ''")
    ap.add_argument("--quick", action="store_true", help="2 repeats, for a smoke run")
    ap.add_argument("--no-slow", action="store_true", help="skip the Theseus/PyPose backends")
    ap.add_argument("--backends", default=None,
                    help="Comma-separated name prefixes to run (e.g. 'ours LM implicit,Ceres'); "
                         "default: all")
    ap.add_argument("--stem", default="ba", help="Write <out>/<stem>.{json,md}.")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    wanted = [b.strip() for b in args.backends.split(",")] if args.backends else None

    def chosen(entries):
        return [e for e in entries if wanted is None or any(e[0].startswith(w) for w in wanted)]

    repeats = 2 if args.quick else args.repeats
    torch.set_num_threads(args.threads)
    load_before = load_average()
    t_start = time.time()
    sections = []
    for size in [s for s in args.sizes.split(",") if s]:
        F, N = (int(x) for x in size.split("x"))
        sf = make_face_problem(F, N, seed=0)
        init = perturb_state(sf.truth, seed=1, rot_deg=3.0, trans_mm=10.0, point_mm=5.0)
        label = f"classical {F}x{N}"
        n_obs = int((sf.problem.weight > 0).sum())
        entries = chosen(backends(args.threads, F * N, not args.no_slow))
        rows, fastest = bench_problem(label, sf, init, entries, repeats)
        sections.append({"problem": label, "F": F, "N": N, "observations": n_obs, "rows": rows,
                         "fastest_peer": fastest["backend"] if fastest else None})
    if args.depth_size:
        F, N = (int(x) for x in args.depth_size.split("x"))
        sf = make_face_problem(F, N, seed=0, parameterization=Parameterization.DEPTH,
                               depth_noise=0.01, depth_scale_spread=0.05, pairs=Window(1))
        init = perturb_state(sf.truth, seed=1, rot_deg=3.0, trans_mm=10.0, log_scale=0.05)
        entries = [e for e in chosen(backends(args.threads, F * N, False))
                   if not e[0].startswith("Ceres")]
        label = f"depth (eq. 2, Window(1), corrections) {F}x{N}"
        rows, fastest = bench_problem(label, sf, init, entries, repeats)
        sections.append({"problem": label, "F": F, "N": N, "rows": rows,
                         "fastest_peer": fastest["backend"] if fastest else None})
    load_after = load_average()

    # the speed target at 61x568 (classical)
    target = None
    for sec in sections:
        if sec["problem"] == "classical 61x568":
            rows = {r["backend"]: r for r in sec["rows"] if "error" not in r}
            ours = rows.get("ours LM implicit (default)")
            peers = [r for r in rows.values() if r["peer"]]
            if ours and peers:
                fast = min(peers, key=lambda r: r["wall_s"])
                fast_solve = min(peers, key=lambda r: r["solve_only_s"])
                target = {
                    "ours_wall_s": ours["wall_s"],
                    "ours_backward_s": ours["backward_s"],
                    "fastest_peer": fast["backend"],
                    "fastest_peer_wall_s": fast["wall_s"],
                    "ratio_wall": ours["wall_s"] / fast["wall_s"],
                    "fastest_peer_solve_only_s": fast_solve["solve_only_s"],
                    "ratio_vs_peer_solve_only": ours["wall_s"] / fast_solve["solve_only_s"],
                    "rms_rel_to_reference": ours["rms_rel_to_reference"],
                    "speed_ok": ours["wall_s"] <= 1.5 * fast["wall_s"],
                    "rms_ok": abs(ours["rms_rel_to_reference"]) <= 0.01,
                    "backward_ok": ours["backward_s"] <= ours["wall_s"],
                }
    result = {
        "when_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t_start)),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": args.threads,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "note": "shared machine: the load averages say how busy it was; times are "
            "medians of interleaved repeats",
        },
        "repeats": repeats,
        "sections": sections,
        "target_61x568": target,
    }
    out = Path(args.out)
    write_json(out / f"{args.stem}.json", result)
    md = render_md(result)
    with atomic_path(out / f"{args.stem}.md") as tmp:
        tmp.write_text(md)
    print(md)


def _busy(load) -> bool:
    """Whether the 1-minute load average before the run says other work was running."""
    return load is None or load[0] > 1.5


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:+.3f}%"


def render_md(res) -> str:
    m = res["machine"]
    lines = [
        "# Bundle adjustment benchmark (bench/ba.py)",
        "",
        (f"Run {res['when_utc']} UTC, {m['cpu_count']} CPU cores, torch {m['torch']}, "
        f"{m['threads']} thread(s) for torch and Ceres, median of {res['repeats']} interleaved "
        "repeats. Load average before/after: "
        f"{_fmt_load(m['load_average_before'])} / {_fmt_load(m['load_average_after'])}"
        + (": other work was using the 2 cores at the same time, so absolute times are noisy; "
           if _busy(m["load_average_before"]) else
           " (the 1-minute load before the run was low: nothing else was running); ")
        + "ratios come from interleaved runs."),
        "",
        ("Synthetic face (seeded), yaw arc -60..+60 deg, f = 500 px, 1 px noise, start perturbed "
        "3 deg / 1 cm / 5 mm. `wall` = the whole `solve` call (Ceres: including building the "
        "pycolmap reconstruction and triangulating); `solve` = the solver's own loop. "
        "Backward = a loss on the refined rotations, gradient w.r.t. observed uv (and depths). "
        "Peak MB = sampled RSS increase of the process during the call. "
        "Theseus (one cost object per observation) runs only up to F x N = 61 x 568 and PyPose "
        "(dense Jacobian, memory quadratic in the residual count) only at 30 x 68, once each "
        "(see /work/shared/BA-NOTES.md for why). Theseus' 'implicit' mode differentiates one "
        "damped Gauss-Newton step (approximate with noisy residuals); ours solves the exact "
        "implicit system."),
        "",
    ]
    for sec in res["sections"]:
        lines += [
            f"## {sec['problem']}" + (f" ({sec['observations']} observations)" if "observations" in sec else ""),
            "",
            ("| backend | wall s | solve s | x fastest peer | iters | RMS px | RMS vs ref | "
            "backward s | peak MB | converged | runs |"),
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sec["rows"]:
            if "error" in r:
                lines.append(f"| {r['backend']} | failed: {r['error'][:80]} | | | | | | | | | |")
                continue
            bw = f"{r['backward_s']:.3f}" if r["backward_s"] is not None else "-"
            lines.append(
                f"| {r['backend']} | {r['wall_s']:.3f} | {r['solve_only_s']:.3f} | "
                f"{r['ratio_to_fastest_peer']:.2f} | {r['iterations']} | {r['rms_px']:.4f} | "
                f"{_pct(r['rms_rel_to_reference'])} | {bw} | {r['peak_mb']:.0f} | "
                f"{r['converged']} | {r['repeats']} |"
            )
        lines.append("")
    t = res.get("target_61x568")
    if t:
        lines += [
            "## Speed target at classical 61x568",
            "",
            (f"- default differentiable backend (ours LM, implicit): {t['ours_wall_s']:.3f} s "
            f"forward, {t['ours_backward_s']:.3f} s backward"),
            (f"- fastest peer: {t['fastest_peer']} {t['fastest_peer_wall_s']:.3f} s wall "
            f"-> ratio {t['ratio_wall']:.2f} (target <= 1.5): "
            f"{'met' if t['speed_ok'] else 'NOT met'}"),
            (f"- against the fastest peer's solve-only time ({t['fastest_peer_solve_only_s']:.3f} s): "
            f"ratio {t['ratio_vs_peer_solve_only']:.2f}"),
            (f"- RMS vs scipy reference: {100 * t['rms_rel_to_reference']:+.4f}% (target within 1%): "
            f"{'met' if t['rms_ok'] else 'NOT met'}"),
            f"- backward <= forward: {'met' if t['backward_ok'] else 'NOT met'}",
            "",
        ]
    return "\n".join(lines)


def _fmt_load(x):
    return "n/a" if not x else "/".join(f"{v:.1f}" for v in x)


if __name__ == "__main__":
    main()
