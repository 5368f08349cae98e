"""`facesfm render` and `facesfm demo` from the command line: outputs, and one-line errors."""

import json

import numpy as np
import pytest

from facesfm.cli import main
from facesfm.data.format import load_sequence

SMALL = ["--frames", "3", "--size", "64", "--focal", "85", "--landmarks", "68", "--quiet"]


def _run(argv, capsys):
    """Run the CLI; returns (exit code, stdout, stderr)."""
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_render_batch_writes_dataset(tmp_path, capsys):
    out = tmp_path / "ds"
    code, stdout, err = _run(["render", "--out", str(out), "--subjects", "2",
                              "--sequences-per-subject", "2", "--yaw-range", "-30,30",
                              "--seed", "4", *SMALL], capsys)
    assert code == 0, err
    meta = json.loads((out / "dataset.json").read_text())
    names = [e["name"] for e in meta["sequences"]]
    assert names == ["00000_00", "00000_01", "00001_00", "00001_01"]
    e = meta["sequences"]
    assert e[0]["face_seed"] == e[1]["face_seed"] != e[2]["face_seed"]
    assert len({x["seed"] for x in e}) == 4
    seq = load_sequence(out / "00001_01")
    assert len(seq) == 3 and seq.image(0).shape == (64, 64, 3) and seq.uv.shape == (3, 68, 2)
    np.testing.assert_allclose(seq.yaw_deg, [-30, 0, 30])
    assert seq.meta["config"]["focal"] == 85.0
    # same face for both sequences of a subject, different faces across subjects
    a, b, c = (load_sequence(out / n).landmark_xyz for n in ("00000_00", "00000_01", "00001_00"))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1.0
    assert "4 sequence(s), 12 frames" in stdout and str(out) in stdout
    assert "mean visible landmarks per frame" in stdout
    # a picture of what was rendered: the first sequence's frames side by side
    from PIL import Image

    assert f"preview {out / 'preview.png'}" in stdout
    assert Image.open(out / "preview.png").size == (3 * 256, 256)


def test_existing_output_is_refused_unchanged(tmp_path, capsys):
    out = tmp_path / "ds"
    assert _run(["render", "--out", str(out), *SMALL], capsys)[0] == 0
    before = _snapshot(out)
    code, _, err = _run(["render", "--out", str(out), "--seed", "9", *SMALL], capsys)
    assert code == 2 and str(out) in _one_line_error(err) and "--overwrite" in err
    assert _snapshot(out) == before
    code, _, err = _run(["render", "--out", str(out), "--seed", "9", "--overwrite", *SMALL],
                        capsys)
    assert code == 0, err
    assert _snapshot(out) != before


@pytest.mark.parametrize("args,culprit", [
    (["--landmarks", "123"], "--landmarks 123"),
    (["--faces", "ict", "--ict-dir", "/nonexistent/ict"], "/nonexistent/ict"),
    (["--faces", "mesh"], "--mesh"),
    (["--faces", "mesh", "--mesh", "/nonexistent/head.obj"], "/nonexistent/head.obj"),
    (["--frames", "5", "--step", "3"], "--frames"),
    (["--size", "big"], "--size big"),
    (["--yaw-range", "60,-60"], "--yaw-range"),
    (["--subjects", "0"], "--subjects"),
])
def test_bad_input_is_one_line_naming_it(tmp_path, capsys, args, culprit):
    out = tmp_path / "x"
    code, _, err = _run(["render", "--out", str(out), "--quiet", *args], capsys)
    assert code == 2
    assert culprit in _one_line_error(err)
    assert not out.exists() or not any(out.iterdir())


def test_malformed_mesh_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.obj"
    bad.write_text("v 0 0 0\nthis is not an obj file\nf 1 2 9\n")
    code, _, err = _run(["render", "--out", str(tmp_path / "o"), "--faces", "mesh", "--mesh",
                         str(bad), "--quiet"], capsys)
    assert code == 2 and str(bad) in _one_line_error(err)


def test_config_yaml_and_overrides(tmp_path, capsys):
    cfg = tmp_path / "batch.yaml"
    cfg.write_text("seed: 3\nrender:\n  width: 48\n  height: 40\n  focal: 60\n  landmarks: 68\n"
                   "  trajectory:\n    frames: 2\n")
    out = tmp_path / "ds"
    code, _, err = _run(["render", "--out", str(out), "--config", str(cfg), "--focal", "70",
                         "--quiet"], capsys)
    assert code == 0, err
    seq = load_sequence(out / "00000_00")
    assert (seq.width, seq.height, len(seq)) == (48, 40, 2)
    assert seq.K[0, 0] == 70.0 and seq.uv.shape[1] == 68
    cfg.write_text("render:\n  widht: 48\n")
    code, _, err = _run(["render", "--out", str(tmp_path / "o2"), "--config", str(cfg)], capsys)
    assert code == 2
    line = _one_line_error(err)
    assert "widht" in line and str(cfg) in line


@pytest.mark.slow
def test_parallel_workers_give_identical_sequences(tmp_path, capsys):
    args = ["--subjects", "2", "--seed", "1", *SMALL]
    assert _run(["render", "--out", str(tmp_path / "w1"), *args], capsys)[0] == 0
    code, stdout, err = _run(["render", "--out", str(tmp_path / "w2"), "--workers", "2",
                              *args], capsys)
    assert code == 0, err
    assert "2 worker(s)" in stdout
    for name in ("00000_00", "00001_00"):
        a, b = load_sequence(tmp_path / "w1" / name), load_sequence(tmp_path / "w2" / name)
        np.testing.assert_array_equal(a.uv, b.uv)
        np.testing.assert_array_equal(a.visible, b.visible)
        for i in range(3):
            np.testing.assert_array_equal(a.image(i), b.image(i))
            np.testing.assert_array_equal(a.depth(i), b.depth(i))


def test_demo_renders_then_solves_with_the_shipped_detector(tmp_path, capsys):
    import json
    import re

    out = tmp_path / "demo"
    code, stdout, err = _run(["demo", "--out", str(out)], capsys)
    assert code == 0, err
    seq = load_sequence(out / "sequence")
    assert len(seq) == 61 and (seq.width, seq.height) == (384, 384)
    vis = seq.visible.sum(1)
    assert f"min {vis.min()}, mean {vis.mean():.1f}, max {vis.max()}" in stdout
    assert "61 frames 384x384" in stdout and "frames/s" in stdout and str(out) in stdout
    # the solve: every output, and the printed figures are the report's
    for name in ("cloud.ply", "mesh.ply", "mesh.obj", "cameras.json", "report.json",
                 "report.html"):
        assert (out / "solve" / name).is_file(), name
    rep = json.loads((out / "solve" / "report.json").read_text())
    ev = rep["evaluation"]
    r0 = ev["poses_initial"]["rotation_mean_deg"]
    r1 = ev["poses_optimised"]["rotation_mean_deg"]
    start = rep["ba"]["start"].split(" + ")[0]
    assert rep["ba"]["start"].endswith(" + tracks") and start in ("factorisation", "template")
    assert f"{r0:.2f} deg initial ({start}) -> {r1:.2f} deg after bundle" in stdout
    mm = ev["cloud_to_gt_surface_mm"]["mean"]
    assert re.search(rf"after ICP: {mm:.2f} mm mean", stdout)
    # what the shipped detector achieves on this face: BA improves on its start, and with the
    # photometric tracks (matched up to 20 frames away, a Cauchy kernel in their BA) and depth
    # refinement the cameras turn within 0.4 degree and the fused face lies within 0.45 mm of
    # the true surface (measured: 8.64 -> 0.16 deg, 0.38 mm; without the sweep's agreement
    # check 0.50 mm; with the Huber kernel 0.59 deg, 0.55 mm; with tracks 4 frames long 2.03
    # deg, 1.02 mm)
    assert r1 < 0.6 * r0 and r1 < 0.4
    assert mm < 0.45 and 0.8 < ev["alignment"]["scale"] < 1.25
    assert rep["photometric"]["tracks"]["tracks"] > 1000
    assert 0.5 < rep["photometric"]["stereo"]["kept_fraction"] <= 1.0


def test_user_mesh_in_cm(tmp_path, capsys):
    """--faces mesh --units cm: the file's centimetres become millimetres in the sequence."""
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    m.vertices *= [7.5, 10.0, 9.0]  # a head-sized ellipsoid, in cm
    m.visual.vertex_colors = np.tile([200, 150, 120, 255], (len(m.vertices), 1))
    path = tmp_path / "head.ply"
    m.export(path)
    out = tmp_path / "ds"
    code, _, err = _run(["render", "--out", str(out), "--faces", "mesh", "--mesh", str(path),
                         "--units", "cm", "--orient", "+z", *SMALL], capsys)
    assert code == 0, err
    seq = load_sequence(out / "00000_00")
    assert seq.meta["face"]["source"] == "mesh" and seq.meta["face"]["mesh"] == str(path)
    r = np.linalg.norm(seq.landmark_xyz / [75.0, 100.0, 90.0], axis=1)
    np.testing.assert_allclose(r, 1.0, atol=0.02)  # on the ellipsoid, scaled to mm
    # landmarks of a featureless mesh spread over all of it: the frontal camera (yaw 0) sees
    # only some, all on the front half
    vis = seq.visible[1]
    assert vis.sum() >= 5 and (seq.landmark_xyz[vis, 2] > 0).all()


def test_ict_faces(tmp_path, capsys, ict_dir):
    out = tmp_path / "ict"
    code, _, err = _run(["render", "--out", str(out), "--faces", "ict", "--ict-dir",
                              str(ict_dir), "--frames", "2", "--size", "96", "--focal", "125",
                              "--landmarks", "200", "--quiet"], capsys)
    assert code == 0, err
    seq = load_sequence(out / "00000_00")
    assert seq.meta["face"]["source"] == "ict" and seq.uv.shape == (2, 200, 2)
    assert seq.visible.sum(1).min() > 50
    bad = tmp_path / "empty_dir"
    bad.mkdir()
    code, _, err = _run(["render", "--out", str(tmp_path / "o"), "--faces", "ict",
                         "--ict-dir", str(bad), "--quiet"], capsys)
    assert code == 2 and str(bad) in _one_line_error(err)


def test_untextured_mesh_is_refused_and_leaves_no_output(tmp_path, capsys):
    import trimesh

    plain = tmp_path / "plain.ply"
    trimesh.creation.icosphere(subdivisions=4, radius=80.0).export(plain)
    out = tmp_path / "o"
    code, _, err = _run(["render", "--out", str(out), "--faces", "mesh", "--mesh", str(plain),
                         *SMALL], capsys)
    assert code == 2 and "plain.ply" in _one_line_error(err) and "texture" in err
    assert "--allow-untextured" in err  # the way out is named
    assert not out.exists()
    # allowed explicitly: rendered in a plain skin tone
    code, _, err = _run(["render", "--out", str(out), "--faces", "mesh", "--mesh", str(plain),
                         "--allow-untextured", *SMALL], capsys)
    assert code == 0, err
    assert len(load_sequence(out / "00000_00")) == 3


def test_mesh_with_fewer_vertices_than_landmarks_is_refused_up_front(tmp_path, capsys):
    import trimesh

    small = tmp_path / "small.ply"
    m = trimesh.creation.icosphere(subdivisions=1, radius=80.0)  # 42 vertices
    m.visual.vertex_colors = np.tile([200, 150, 120, 255], (len(m.vertices), 1))
    m.export(small)
    out = tmp_path / "o"
    code, _, err = _run(["render", "--out", str(out), "--faces", "mesh", "--mesh", str(small),
                         *SMALL], capsys)
    line = _one_line_error(err)
    assert code == 2 and "small.ply" in line and "--landmarks 68" in line
    assert not out.exists()


def test_vary_trajectory_gives_each_sequence_its_own_path(tmp_path, capsys):
    """--vary-trajectory: the two sequences of one run follow different camera paths, and the
    dataset records the variation in its config."""
    out = tmp_path / "ds"
    code, _, err = _run(["render", "--out", str(out), "--subjects", "2", "--frames", "5",
                         "--size", "64", "--focal", "85", "--landmarks", "68", "--quiet",
                         "--vary-trajectory"], capsys)
    assert code == 0, err
    a, b = (load_sequence(out / n) for n in ("00000_00", "00001_00"))
    assert np.abs(a.cam_T_world - b.cam_T_world).max() > 1.0
    traj = json.loads((out / "dataset.json").read_text())["config"]["render"]["trajectory"]
    assert traj["direction"] == "random" and traj["pitch_spread"] > 0


def test_resume_keeps_finished_sequences_and_renders_the_rest(tmp_path, capsys):
    """An interrupted render (its finished sequences, no dataset.json) continued with
    --resume: the finished ones are kept as they are, the rest rendered, and the result is
    the render an uninterrupted run makes; other settings are refused, nothing touched."""
    import shutil

    args = ["--subjects", "3", "--seed", "5", *SMALL]
    full = tmp_path / "full"
    assert _run(["render", "--out", str(full), *args], capsys)[0] == 0
    part = tmp_path / "part"
    shutil.copytree(full, part)
    (part / "dataset.json").unlink()
    shutil.rmtree(part / "00002_00")
    kept = _snapshot(part / "00000_00")
    code, _, err = _run(["render", "--out", str(part), "--seed", "6", "--resume", *SMALL],
                        capsys)
    assert code == 2 and "other settings" in _one_line_error(err)
    assert not (part / "00002_00").exists() and _snapshot(part / "00000_00") == kept
    code, stdout, err = _run(["render", "--out", str(part), "--resume", *args], capsys)
    assert code == 0, err
    assert "2 finished sequence(s) kept, 1 to render" in stdout
    assert _snapshot(part / "00000_00") == kept
    assert _snapshot(part) == _snapshot(full)


def test_a_mesh_of_implausible_size_is_refused_with_the_way_out(tmp_path, capsys):
    """A scan in arbitrary units that fits none of mm/cm/m (it rendered 45 mm tall without a
    word): refused, naming --units and --scale; --scale brings it to a head's size."""
    import trimesh

    small = tmp_path / "small.ply"
    trimesh.creation.icosphere(subdivisions=4, radius=22.5).export(small)  # 45 mm across
    base = ["render", "--faces", "mesh", "--mesh", str(small), "--allow-untextured", *SMALL]
    code, _, err = _run([*base, "--out", str(tmp_path / "o")], capsys)
    line = _one_line_error(err)
    assert code == 2 and "45 mm across" in line and "--scale" in line and "--units" in line
    assert not (tmp_path / "o").exists()
    code, _, err = _run([*base, "--scale", "4", "--out", str(tmp_path / "o2")], capsys)
    assert code == 0, err
    mesh = np.asarray(__import__("trimesh").load(tmp_path / "o2" / "00000_00" / "mesh.ply",
                                                 process=False).vertices)
    assert abs(np.ptp(mesh, axis=0).max() - 180.0) < 2.0


def test_vary_appearance_puts_photographs_and_a_camera_in_the_sequences(tmp_path, capsys):
    """--vary-appearance: of 4 sequences some stand before a recorded photograph and some
    went through a recorded camera; the dataset records the settings; the geometry is the
    same as without it (same seed)."""
    pytest.importorskip("skimage.data", reason="photograph backgrounds need scikit-image")
    argv = ["render", "--subjects", "4", "--seed", "3", *SMALL]
    code, _, err = _run([*argv, "--out", str(tmp_path / "plain")], capsys)
    assert code == 0, err
    code, _, err = _run([*argv, "--out", str(tmp_path / "varied"), "--vary-appearance"], capsys)
    assert code == 0, err
    recs = []
    for n in (f"{i:05d}_00" for i in range(4)):
        meta = json.loads((tmp_path / "varied" / n / "sequence.json").read_text())
        recs.append(meta.get("appearance") or {})
        a, b = load_sequence(tmp_path / "plain" / n), load_sequence(tmp_path / "varied" / n)
        assert np.array_equal(a.cam_T_world, b.cam_T_world) and np.array_equal(a.uv, b.uv)
    assert any(r.get("background") for r in recs) and any(r.get("camera") for r in recs)
    app = json.loads((tmp_path / "varied" / "dataset.json").read_text())["config"]["render"][
        "appearance"]
    assert app["background"]["probability"] > 0 and app["camera"]["probability"] > 0
