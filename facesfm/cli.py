"""The ``facesfm`` command line: a click group that parses options and calls the library.

No logic lives here; every command hands its options to a function in the package.
User-facing errors (:class:`facesfm.errors.FacesfmError`) are printed as one line.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import click

from facesfm.errors import FacesfmError, Terminated

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")


@click.group()
@click.version_option(package_name="facesfm")
def cli():
    """3D face reconstruction from multi-view images by deep SfM with bundle adjustment."""


@cli.command()
@click.option("--out", default="out/demo", show_default=True, type=click.Path())
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--overwrite/--no-overwrite", default=True, show_default=True)
@click.option("--no-solve", is_flag=True, help="Only render the sequence.")
def demo(out, seed, overwrite, no_solve):
    """Render a built-in face sequence (no shared data needed), solve it with the shipped
    detector and print its accuracy against the ground truth."""
    from facesfm.demo import run_demo

    run_demo(out=out, seed=seed, overwrite=overwrite, solve=not no_solve, echo=click.echo)


@cli.command()
@click.option("--out", required=True, type=click.Path(), help="Output folder.")
@click.option("--faces", type=click.Choice(["builtin", "ict", "mesh"]), default=None,
              help="Face source [default: builtin].")
@click.option("--mesh", type=click.Path(), default=None, help="Mesh file for --faces mesh.")
@click.option("--units", type=click.Choice(["mm", "cm", "m"]), default=None,
              help="Length unit of --mesh [default: mm].")
@click.option("--scale", type=float, default=None,
              help="A further factor to mm for a mesh in arbitrary units (after --units).")
@click.option("--orient", default=None, help="Axis the --mesh face looks down, e.g. +z.")
@click.option("--allow-untextured", is_flag=True, default=None,
              help="Render a --mesh without texture or vertex colours in a plain skin tone.")
@click.option("--ict-dir", type=click.Path(), default=None, help="ICT-FaceKit folder.")
@click.option("--subjects", type=int, default=None, help="Number of faces [default: 1].")
@click.option("--sequences-per-subject", type=int, default=None,
              help="Sequences per face [default: 1].")
@click.option("--seed", type=int, default=None, help="Master seed [default: 0].")
@click.option("--frames", type=int, default=None,
              help="Frames spread over the yaw range (instead of --step).")
@click.option("--yaw-range", default=None, help="MIN,MAX yaw in degrees [default: -60,60].")
@click.option("--step", type=float, default=None, help="Yaw step in degrees [default: 2].")
@click.option("--vary-trajectory", is_flag=True, default=None,
              help="Give each sequence its own path: direction, yaw range and speed, easing, "
                   "pitch, roll and distance drawn from its seed.")
@click.option("--vary-appearance", is_flag=True, default=None,
              help="Randomise the images' appearance, drawn from each sequence's seed and "
                   "recorded in its sequence.json: photographs behind 70% of the sequences "
                   "(scikit-image's, cropped, flipped, recoloured), a randomised camera on 80% "
                   "(noise, defocus and motion blur, exposure, white balance, vignetting, "
                   "JPEG), extra coloured lights and a sheen on 60%, changed skin on 70%, "
                   "and hair strands, spectacle frames or a hand in front of the face on "
                   "some.")
@click.option("--size", default=None, help="Image size N or WxH [default: 384].")
@click.option("--focal", type=float, default=None, help="Focal length in px [default: 500].")
@click.option("--workers", type=int, default=None, help="Processes [default: 1].")
@click.option("--landmarks", type=int, default=None,
              help="Landmark count: 68, 200, 300, 400, 500, 568 or 800 [default: 800].")
@click.option("--overwrite", is_flag=True, help="Replace existing sequences in --out.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted render in --out: keep its finished sequences "
                   "(refused if they were rendered with other settings), render the rest.")
@click.option("--config", "config", type=click.Path(), default=None,
              help="YAML BatchConfig; options given here override it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def render(out, overwrite, resume, config, quiet, **options):
    """Render synthetic face sequences with ground truth (images, depth, masks, landmarks)."""
    from facesfm.render.batch import build_batch_config, render_batch

    cfg = build_batch_config(config, **options)
    render_batch(cfg, out, overwrite=overwrite, resume=resume, progress=not quiet,
                 echo=click.echo)


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="New folder for the index.")
def merge(inputs, out):
    """List the sequences of several rendered folders in one dataset.json (nothing is
    copied), e.g. two renders with different seeds as one training set."""
    from facesfm.data.dataset import merge_datasets

    index = merge_datasets(out, inputs)
    faces = sum(p["subjects"] for p in index["config"]["parts"])
    click.echo(f"{out}/dataset.json: {len(index['sequences'])} sequence(s) of {faces} face(s) "
               f"from {len(inputs)} folder(s)")


_TRAIN_COMMON = [
    click.argument("data", type=click.Path()),
    click.option("--out", required=True, type=click.Path(), help="Run folder."),
    click.option("--preset", default=None,
                 help="Config preset: tiny, small or paper [default: small]."),
    click.option("--config", "config", type=click.Path(), default=None,
                 help="YAML TrainConfig; options given here override it."),
    click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                 help="Set any config key, dotted (e.g. --set optim.lr=1e-4); repeatable; "
                      "applied last."),
    click.option("--val", type=click.Path(), default=None,
                 help="Validation sequences [default: the training data, not augmented]."),
    click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint."),
    click.option("--seed", type=int, default=None),
    click.option("--epochs", type=int, default=None),
    click.option("--max-steps", type=int, default=None),
    click.option("--batch-size", type=int, default=None),
    click.option("--lr", type=float, default=None),
    click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default=None,
                 help="Learning rate over the run [default: constant]."),
    click.option("--image-size", type=int, default=None),
    click.option("--landmarks", type=int, default=None, help="Number of landmarks N."),
    click.option("--threads", type=int, default=None, help="torch CPU threads."),
    click.option("--quiet", is_flag=True, help="No progress bar."),
]


def _train_options(f):
    for opt in reversed(_TRAIN_COMMON):
        f = opt(f)
    return f


@cli.group()
def train():
    """Train the networks (stage 1: landmarks, stage 2: depth and pose). Multi-process:
    ``torchrun --nproc_per_node K -m facesfm.cli train ...``."""


@train.command("landmarks")
@_train_options
@click.option("--init", "init", type=click.Path(), default=None,
              help="Start from this stage-1 checkpoint's weights (fine-tuning).")
@click.option("--face-crop", type=float, default=None,
              help="Share of face-crop training samples; > 0 also refines detections in a "
                   "face crop at inference.")
def train_landmarks_cmd(data, out, preset, config, sets, val, resume, threads, quiet, init,
                        **options):
    """Stage 1: supervised landmark detector on rendered sequences in DATA."""
    from facesfm.training.entry import train_command

    train_command("landmarks", data, out, preset=preset, config=config, sets=sets, val=val,
                  resume=resume, threads=threads, progress=not quiet, echo=click.echo,
                  init=init, **options)


@train.command("sfm")
@_train_options
@click.option("--landmarks-ckpt", type=click.Path(), default=None,
              help="Stage-1 checkpoint (the frozen landmark detector).")
@click.option("--ablation", type=str, default=None,
              help="full, spectral (no landmarks) or landmark (landmark BA only).")
@click.option("--ba/--no-ba", default=None, help="Bundle-adjustment layer on/off.")
@click.option("--ba-backward", "backward", default=None,
              help="BA backward mode: implicit, implicit_gn, unroll, truncated.")
@click.option("--landmark-source", default=None, help="detector or gt (oracle ablation).")
@click.option("--window", type=int, default=None, help="Frames per sample.")
def train_sfm_cmd(data, out, preset, config, sets, val, resume, threads, quiet,
                  landmarks_ckpt, **options):
    """Stage 2: unsupervised depth and pose with the BA layer, on sequences in DATA."""
    from facesfm.training.entry import train_command

    train_command("sfm", data, out, preset=preset, config=config, sets=sets, val=val,
                  resume=resume,
                  landmarks_ckpt=landmarks_ckpt, threads=threads, progress=not quiet,
                  echo=click.echo, **options)


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Output folder.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--checkpoint", type=click.Path(), default=None,
              help="Stage-2 (sfm) training checkpoint: depth and pose networks; 'ict' = the "
                   "shipped ones (trained on ICT-FaceKit faces).")
@click.option("--landmark-checkpoint", type=click.Path(), default=None,
              help="Stage-1 (landmarks) training checkpoint: the landmark detector; 'ict' or "
                   "'builtin' = a shipped one [default: the one recorded in --checkpoint].")
@click.option("--landmarks-from", type=click.Choice(["detector", "mediapipe", "oracle"]),
              default=None,
              help="Landmarks: our detector (--landmark-checkpoint), MediaPipe's face mesh "
                   "(its inner points where the mesh faces the camera; no detector needed) or "
                   "the sequence's landmarks.npz (same as --oracle-landmarks) "
                   "[default: detector].")
@click.option("--oracle-landmarks", is_flag=True,
              help="Landmarks from the sequence's landmarks.npz instead of the network.")
@click.option("--oracle-depth", is_flag=True,
              help="Analysis: GT depth maps and masks instead of the depth network.")
@click.option("--depth", type=click.Choice(["network", "oracle", "landmarks"]), default=None,
              help="Depth maps: the depth network, the GT (same as --oracle-depth) or "
                   "interpolated from the bundle-adjusted landmarks (no depth network) "
                   "[default: network].")
@click.option("--oracle-poses", is_flag=True, help="Same as --poses-init gt.")
@click.option("--poses-init", type=click.Choice(["network", "landmarks", "gt", "gt-perturbed"]),
              default=None, help="Initial poses: the pose network, a factorisation of the "
                                 "landmark tracks (no pose network), GT or perturbed GT "
                                 "[default: network].")
@click.option("--ba-parameterization", type=click.Choice(["depth", "classical"]), default=None,
              help="BA unknowns: poses + depth scales, or poses + landmark points "
                   "[default: classical].")
@click.option("--perturb", default=None,
              help="DEG,MM perturbation of --poses-init gt-perturbed [default: 3,10].")
@click.option("--seed", type=int, default=None, help="Seed of the perturbation [default: 0].")
@click.option("--landmarks", type=int, default=None, help="Use the first N landmark IDs.")
@click.option("--focal", type=float, default=None,
              help="Focal length in px [default: the sequence's, else the photos' EXIF, else "
                   "estimated from point tracks; a solve left on the guess 1.2 * max(W, H) is "
                   "refused].")
@click.option("--intrinsics", default=None, help="f | f,cx,cy | fx,fy,cx,cy in px.")
@click.option("--ba/--no-ba", default=None, help="Run the bundle adjustment [default: on].")
@click.option("--mesh-method", type=click.Choice(["tsdf", "poisson"]), default=None,
              help="Surface reconstruction [default: tsdf].")
@click.option("--consistent-views", type=int, default=None,
              help="Fuse only pixels that this many of the 8 frames on each side see within "
                   "1 mm of their own depth (fewer, more accurate points) [default: 0, off].")
@click.option("--tracks/--no-tracks", default=None,
              help="Match skin patches between neighbouring frames and run the BA again with "
                   "these photometric point tracks beside the landmarks (needs the classical "
                   "BA) [default: off].")
@click.option("--stereo/--no-stereo", default=None,
              help="Refine the depth maps photometrically (a multi-view plane sweep around "
                   "them) before fusion; pixels without a match are left out [default: off].")
@click.option("--face-crop", type=click.Choice(["auto", "on", "off"]), default=None,
              help="Find the face in each frame (MediaPipe), skip frames without one and crop "
                   "the frames to it; outputs stay in the original pixels [default: auto = "
                   "on for photo folders and videos, off for sequence folders].")
@click.option("--person-mask", type=click.Choice(["auto", "on", "off"]), default=None,
              help="Cut the depth maps' masks to the person MediaPipe's selfie segmentation "
                   "finds, so that background inside the landmark hull stays out of tracks, "
                   "plane sweep and cloud [default: auto = on for photo folders and videos].")
@click.option("--max-frames", type=int, default=None,
              help="A video is solved from keyframes, one every 2 degrees of head turn: at "
                   "most this many [default: 150].")
@click.option("--keep-unreliable", is_flag=True, default=None,
              help="Write a result that fails the checks (cameras that disagree with the "
                   "head's turning, a degenerate mesh, a cloud no face could be), marked "
                   "'status: unreliable' in report.json, instead of refusing it.")
@click.option("--preset", default=None,
              help="Named settings: 'fast' = the detector alone (factorised start, BA, depth "
                   "from the adjusted landmarks); 'accurate' = the same plus --tracks "
                   "--stereo. A --config file and the options here override it.")
@click.option("--config", "config", type=click.Path(), default=None,
              help="YAML SolveConfig; options given here override it.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Set any SolveConfig key, dotted (e.g. --set ba.max_iterations=20, "
                   "--set motion_check=off); repeatable; applied last.")
@click.option("--no-html", is_flag=True, help="Skip report.html.")
def solve(input_path, out, overwrite, focal, intrinsics, preset, config, sets, no_html,
          **options):
    """Reconstruct a face from a sequence folder, a folder of images or a video file."""
    from facesfm.solve.config import build_solve_config
    from facesfm.solve.pipeline import run_solve

    cfg = build_solve_config(config, preset, sets, **options)
    res = run_solve(input_path, out, cfg, overwrite=overwrite, focal=focal,
                    intrinsics=intrinsics, echo=lambda m: click.echo(m, err=True),
                    html=not no_html)
    click.echo(f"wrote {out}: {len(res.frames.names)} frames, {len(res.cloud)} points, "
               f"{len(res.mesh.faces)} triangles, BA rms {res.ba.rms_px:.3f} px "
               f"({res.timings.get('total', 0.0):.1f} s)"
               + (" - UNRELIABLE, see report.json 'problems'" if res.problems else ""))


@cli.command()
@click.argument("cameras", metavar="OUT_OR_CAMERAS_JSON", type=click.Path())
@click.option("--gt", type=click.Path(), default=None,
              help="Sequence folder with GT poses [default: GT stored in cameras.json].")
@click.option("--gauge", type=click.Choice(["sim3", "se3", "first_frame", "first_frame_scaled",
                                            "orientations"]),
              default=None, help="Trajectory alignment [default: sim3; orientations for a "
                                 "narrow turn, whose camera centres lie nearly on a line].")
@click.option("--plot", type=click.Path(), default=None, help="Write a PNG of the errors.")
@click.option("--json", "json_path", type=click.Path(), default=None,
              help="Write the summary as JSON.")
def compare(cameras, gt, gauge, plot, json_path):
    """Learned vs optimised poses per frame (and GT where known)."""
    from facesfm.io import write_json
    from facesfm.solve.compare import compare_cameras, format_comparison, plot_comparison

    c = compare_cameras(cameras, gt=gt, gauge=gauge)
    click.echo(format_comparison(c))
    if plot:
        plot_comparison(c, plot)
    if json_path:
        write_json(json_path, c.summary())


@cli.command("eval")
@click.argument("inputs", metavar="SEQ_OR_DATASET...", nargs=-1, required=True,
                type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Output folder for the tables.")
@click.option("--methods", default="colmap_ba,factorization", show_default=True,
              help="Comma-separated baselines on landmark tracks (empty: none).")
@click.option("--solve-dir", "solve_dirs", multiple=True, type=click.Path(),
              help="A `facesfm solve` output folder to evaluate too (repeatable).")
@click.option("--landmarks", default="68", show_default=True,
              help="Comma-separated landmark counts; several give a Table-1 sweep.")
@click.option("--landmark-noise", type=float, default=0.0, show_default=True,
              help="Gaussian noise (px per coordinate) added to the oracle landmark tracks.")
@click.option("--landmark-checkpoint", type=click.Path(), default=None,
              help="Stage-1 checkpoint: detect the landmarks instead of using the oracle.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise.")
@click.option("--protocol", "protocols", default="icp", show_default=True,
              help="Comma-separated: icp (landmark similarity + ICP to the GT mesh), now (also "
                   "the NoW benchmark's errors of each --solve-dir's mesh, scale free and "
                   "metric).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_cmd(inputs, out, methods, solve_dirs, landmarks, landmark_noise, landmark_checkpoint,
             seed, protocols, overwrite, quiet):
    """Evaluate the classical baselines (and solve outputs) against the ground truth."""
    from facesfm.eval.run import evaluate_sequences, format_summary

    rep = evaluate_sequences(inputs, methods, landmarks, out, noise_px=landmark_noise,
                             seed=seed, solve_dirs=solve_dirs,
                             landmark_checkpoint=landmark_checkpoint, overwrite=overwrite,
                             progress=not quiet, protocols=protocols)
    click.echo(format_summary(rep))
    failed = [r for r in rep.records if "error" in r]
    for r in failed:
        click.echo(f"failed: {r['sequence']} {r['method']} N={r['landmarks']}: {r['error']}",
                   err=True)
    click.echo(f"wrote {out}")


def _terminate(signum, frame):
    raise Terminated


def main(argv=None):
    # SIGTERM unwinds like Ctrl-C (atomic writes remove their temporaries) instead of killing
    # the process where it stands; only the main thread may set a handler
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        cli.main(args=argv, standalone_mode=False)
    except FacesfmError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except Terminated:
        click.echo("terminated", err=True)
        sys.exit(128 + signal.SIGTERM)
    except OSError as e:  # the disk is full, a folder read-only: the system's words, one line
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"error: {e.strerror or e}{where}", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
