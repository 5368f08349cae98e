"""Bad input: one line naming the culprit (exit 2), and no output folder left behind."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from facesfm.cli import main

ORACLE = ["--oracle-landmarks", "--oracle-depth", "--oracle-poses"]


def _run_error(args, capsys, out):
    """Run the CLI expecting a one-line error; returns it. Checks nothing was written."""
    with pytest.raises(SystemExit) as e:
        main(["solve", *[str(a) for a in args], "--out", str(out)])
    assert e.value.code == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines()
           if not ln.startswith("warning: ")]  # warnings (skipped frames) may precede it
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*"))
    return err[0]


def _png(path, size=(32, 32), value=128):
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def test_missing_input(tmp_path, capsys):
    msg = _run_error([tmp_path / "nope"], capsys, tmp_path / "out")
    assert "input not found" in msg and "nope" in msg


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    msg = _run_error([tmp_path / "empty"], capsys, tmp_path / "out")
    assert "empty" in msg and "no images" in msg


def test_unreadable_image(tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    _png(d / "a.png")
    (d / "b.png").write_bytes(b"not a png at all")
    msg = _run_error([d], capsys, tmp_path / "out")
    assert "unreadable image" in msg and "b.png" in msg


def test_mixed_image_sizes(tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    _png(d / "a.png", (32, 32))
    _png(d / "b.png", (48, 32))
    msg = _run_error([d], capsys, tmp_path / "out")
    assert "mixed image sizes" in msg and "b.png is 48x32" in msg


def test_single_frame(tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    _png(d / "a.png")
    msg = _run_error([d], capsys, tmp_path / "out")
    assert "only 1 image;" in msg and "at least 2" in msg  # not "1 images"
    msg = _run_error([d / "a.png"], capsys, tmp_path / "out")
    assert "a single image" in msg and "a.png" in msg


def test_undecodable_video(tmp_path, capsys):
    v = tmp_path / "clip.mp4"
    v.write_bytes(b"\x00\x01garbage" * 100)
    msg = _run_error([v], capsys, tmp_path / "out")
    assert "clip.mp4" in msg and ("undecodable video" in msg or "cannot decode" in msg)


def test_video_frames_are_read(tmp_path):
    """A GIF decodes through imageio (no ffmpeg needed); default intrinsics are the guess."""
    from facesfm.solve.inputs import load_input

    frames = [Image.fromarray(np.full((24, 40, 3), 40 * i, np.uint8)) for i in range(3)]
    p = tmp_path / "clip.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    fs = load_input(p)
    assert fs.source == "video" and fs.images.shape == (3, 24, 40, 3)
    assert fs.names == ("frame_000000.png", "frame_000001.png", "frame_000002.png")
    np.testing.assert_allclose(fs.images[:, 0, 0, 0], [0, 40, 80], atol=2)
    np.testing.assert_allclose(fs.K, [[48.0, 0, 19.5], [0, 48.0, 11.5], [0, 0, 1]])
    assert fs.K_source == "default"
    fs = load_input(p, focal=30.0)
    assert fs.K[0, 0] == fs.K[1, 1] == 30.0 and fs.K_source == "option"


def test_image_folder_without_checkpoint(tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    _png(d / "a.png")
    _png(d / "b.png")
    msg = _run_error([d], capsys, tmp_path / "out")
    assert "--landmark-checkpoint" in msg
    msg = _run_error([d, "--oracle-landmarks"], capsys, tmp_path / "out")
    assert "--oracle-landmarks needs a facesfm sequence folder" in msg


def test_missing_and_incompatible_checkpoints(seq9, tmp_path, capsys):
    import torch

    from facesfm.config import to_dict
    from facesfm.networks import LandmarkNet, LandmarkNetConfig
    from facesfm.training import TrainState, preset_config, save_checkpoint

    msg = _run_error([seq9, "--oracle-landmarks", "--checkpoint", tmp_path / "none.pt"],
                     capsys, tmp_path / "out")
    assert "checkpoint not found" in msg and "none.pt" in msg
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    msg = _run_error([seq9, "--oracle-landmarks", "--checkpoint", bad], capsys, tmp_path / "out")
    assert "bad.pt" in msg and "checkpoint" in msg
    # a landmark checkpoint whose weights do not fit its config (another network size)
    cfg = preset_config("tiny")
    other = LandmarkNet(LandmarkNetConfig(num_landmarks=5, channels=(4, 4, 4, 4),
                                          fc_dims=(8, 8)))
    ck = tmp_path / "lm.pt"
    save_checkpoint(ck, models={"model": other}, optimizer=None, state=TrainState(),
                    config=to_dict(cfg), stage="landmarks")
    msg = _run_error([seq9, "--oracle-depth", "--oracle-poses", "--landmark-checkpoint", ck],
                     capsys, tmp_path / "out")
    assert "lm.pt" in msg and "incompatible landmark network" in msg
    # a landmark checkpoint given as the sfm checkpoint: wrong stage
    msg = _run_error([seq9, "--oracle-landmarks", "--checkpoint", ck], capsys,
                     tmp_path / "out")
    assert "lm.pt" in msg and "'landmarks'" in msg
    assert torch.is_tensor(next(iter(other.state_dict().values())))


def test_no_face_frames_skipped_or_too_few(seq9, tmp_path, capsys):
    """Frames without a face are skipped with a warning; too few left is an error."""
    from facesfm.solve.config import SolveConfig
    from facesfm.solve.pipeline import run_solve
    from facesfm.solvers.landmark_ba import BAConfig

    seq = tmp_path / "seq"
    shutil.copytree(seq9, seq)
    lm = dict(np.load(seq / "landmarks.npz"))
    lm["visible"][[1, 4]] = False  # no face found in frames 1 and 4
    np.savez(seq / "landmarks.npz", **lm)
    lines = []
    cfg = SolveConfig(oracle_landmarks=True, oracle_depth=True, poses_init="gt",
                      ba=BAConfig(enabled=False), evaluate=False)
    res = run_solve(seq, tmp_path / "out", cfg, echo=lines.append, html=False)
    assert lines == ["warning: no face found in 2 frame(s), skipped: 000001.png, 000004.png"]
    assert res.frames.names == tuple(f"{i:06d}.png" for i in (0, 2, 3, 5, 6, 7, 8))
    cams = json.loads((tmp_path / "out" / "cameras.json").read_text())
    assert [f["input_index"] for f in cams["frames"]] == [0, 2, 3, 5, 6, 7, 8]
    np.testing.assert_array_equal(np.array(cams["frames"][1]["cam_T_world_gt"]),
                                  res.frames.sequence.cam_T_world[2])

    lm["visible"][2:] = False  # only frame 0 left
    np.savez(seq / "landmarks.npz", **lm)
    msg = _run_error([seq, *ORACLE], capsys, tmp_path / "out2")
    assert "face was found in only 1 of 9 frames" in msg and str(seq) in msg
    with pytest.raises(SystemExit):
        main(["solve", str(seq), *ORACLE, "--out", str(tmp_path / "out3")])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("warning: no face found in 8 frame(s), skipped: 000001.png")


def test_focal_option_over_a_sequence_says_it_replaces_its_k(seq9, tmp_path):
    from facesfm.solve.config import SolveConfig
    from facesfm.solve.pipeline import run_solve
    from facesfm.solvers.landmark_ba import BAConfig

    cfg = SolveConfig(oracle_landmarks=True, oracle_depth=True, poses_init="gt",
                      ba=BAConfig(enabled=False), evaluate=False)
    lines = []
    K = np.asarray(json.loads((seq9 / "sequence.json").read_text())["K"])
    res = run_solve(seq9, tmp_path / "same", cfg, echo=lines.append, html=False,
                    focal=float(K[0, 0]))  # the same K: nothing to say
    assert lines == [] and res.frames.K_source == "option"
    run_solve(seq9, tmp_path / "other", cfg, echo=lines.append, html=False, focal=300.0)
    assert lines == [(f"warning: --focal/--intrinsics replace the sequence's own K (focal "
                     f"{K[0, 0]:g} px, principal point {K[0, 2]:g}, {K[1, 2]:g}) with focal "
                     f"300 px, principal point {K[0, 2]:g}, {K[1, 2]:g}")]


def test_existing_output_and_failure_inside_leave_nothing(seq9, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(SystemExit):
        main(["solve", str(seq9), *ORACLE, "--out", str(out)])
    assert "output folder exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "x"

    # a failure while writing the outputs: no output folder, no partial folder
    from facesfm.solve import outputs

    def boom(path, res):
        raise OSError(f"disk full while writing {path.name}")

    monkeypatch.setattr(outputs, "write_report_json", boom)
    out2 = tmp_path / "out2"
    with pytest.raises(SystemExit) as e:
        main(["solve", str(seq9), *ORACLE, "--no-ba", "--no-html", "--out", str(out2)])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "error: disk full while writing report.json" in err
    assert "Traceback" not in err
    assert not out2.exists() and not list(tmp_path.glob(".out2*"))


def test_option_errors(seq9, tmp_path, capsys):
    msg = _run_error([seq9, *ORACLE, "--focal", "-3"], capsys, tmp_path / "out")
    assert "--focal" in msg
    msg = _run_error([seq9, *ORACLE, "--intrinsics", "1,2"], capsys, tmp_path / "out")
    assert "--intrinsics 1,2" in msg
    msg = _run_error([seq9, "--oracle-landmarks", "--oracle-depth", "--poses-init",
                      "gt-perturbed", "--perturb", "3"], capsys, tmp_path / "out")
    assert "--perturb 3" in msg
    msg = _run_error([seq9, "--oracle-landmarks", "--oracle-depth", "--oracle-poses",
                      "--poses-init", "gt-perturbed"], capsys, tmp_path / "out")
    assert "disagree" in msg


def test_compare_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["compare", str(tmp_path / "nothing")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cameras file not found" in err[0]
    p = tmp_path / "cameras.json"
    p.write_text(json.dumps({"format": "facesfm-cameras", "version": 1, "frames": [{}]}))
    with pytest.raises(SystemExit):
        main(["compare", str(p)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "malformed cameras file" in err[0] and "cameras.json" in err[0]


def test_image_folder_and_sequence_inputs(seq9):
    from facesfm.data.format import load_sequence
    from facesfm.solve.inputs import load_input

    seq = load_sequence(seq9)
    a = load_input(seq9)
    b = load_input(seq9 / "rgb", intrinsics="220")
    assert a.source == "sequence" and b.source == "images" and b.sequence is None
    np.testing.assert_array_equal(a.images, b.images)
    assert a.names == b.names == tuple(f"{i:06d}.png" for i in range(9))
    np.testing.assert_array_equal(a.K, seq.K)
    np.testing.assert_allclose(b.K, seq.K)  # f = 220 px, centre (W - 1) / 2 as rendered
    assert load_input(seq9 / "rgb").K[0, 0] == 1.2 * 160


def test_mp4_frames_are_read(tmp_path):
    """An mp4 decodes through imageio-ffmpeg (installed by the Makefile's video extra)."""
    pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg missing: pip install -e '.[video]'")
    import imageio.v3 as iio

    from facesfm.solve.inputs import load_input

    frames = np.stack([np.full((32, 48, 3), 50 * i, np.uint8) for i in range(4)])
    p = tmp_path / "clip.mp4"
    iio.imwrite(p, frames, fps=4)
    fs = load_input(p)
    assert fs.source == "video" and fs.images.shape == (4, 32, 48, 3)
    # lossy codec: grey levels survive within a few units
    np.testing.assert_allclose(fs.images[:, 16, 24].mean(-1), [0, 50, 100, 150], atol=4)
