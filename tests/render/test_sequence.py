"""Ground truth of a written sequence, checked from what is on disk."""

import json

import numpy as np
import pytest
import trimesh

from facesfm.data.format import load_sequence
from facesfm.errors import InputError
from facesfm.geometry.camera import camera_center, project, transform
from facesfm.render import writer as writer_mod
from facesfm.render.config import RenderConfig, TrajectoryConfig
from facesfm.render.visibility import landmark_normals
from facesfm.render.writer import render_sequence


def test_layout_and_metadata(seq21):
    meta = json.loads((seq21 / "sequence.json").read_text())
    assert meta["format"] == "facesfm-sequence" and meta["version"] == 1
    assert meta["units"] == "mm" and (meta["width"], meta["height"]) == (384, 384)
    np.testing.assert_allclose(meta["K"], [[500, 0, 191.5], [0, 500, 191.5], [0, 0, 1]])
    assert len(meta["frames"]) == 21
    f0 = meta["frames"][7]
    assert f0["index"] == 21 and f0["yaw_deg"] == pytest.approx(-18.0)
    assert f0["image"] == "rgb/000007.png" and f0["depth"] == "depth/000007.npy"
    assert meta["landmarks"] == {"count": 800, "file": "landmarks.npz"}
    assert meta["face"]["source"] == "builtin" and meta["seed"] == 0
    assert meta["config"]["trajectory"]["every"] == 3
    for name in ("mesh.ply", "colmap/cameras.txt", "colmap/images.txt", "colmap/points3D.txt"):
        assert (seq21 / name).is_file()
    seq = load_sequence(seq21)
    im, d, m = seq.image(20), seq.depth(20), seq.mask(20)
    assert im.shape == (384, 384, 3) and im.dtype == np.uint8
    assert d.shape == (384, 384) and d.dtype == np.float32
    assert m.dtype == bool and 2000 < m.sum() < (d > 0).sum()
    assert (d[m] > 0).all()  # the face mask lies on the rendered surface
    fg = d[d > 0]
    assert 300 < fg.min() and fg.max() < 700  # mm, a head 500 mm away


def test_visible_landmarks_reproject_within_001px(seq21):
    """Stored xyz (and the mesh.ply vertex), stored K and stored poses give the stored uv."""
    seq = load_sequence(seq21)
    mesh = trimesh.load(seq21 / "mesh.ply", process=False)
    np.testing.assert_allclose(np.asarray(mesh.vertices)[seq.landmark_vertex_ids],
                               seq.landmark_xyz, atol=1e-4)  # PLY stores float32
    np.testing.assert_array_equal(seq.landmark_ids, np.arange(800))
    x_cam = transform(seq.cam_T_world[:, None], seq.landmark_xyz[None])[:, 0]  # (F, L, 3)
    uv = project(seq.K, x_cam)
    vis = seq.visible
    assert vis.sum(1).min() > 250 and vis[10].sum() > 700  # frontal frame sees most
    err = np.linalg.norm(uv - seq.uv, axis=-1)[vis]
    assert err.max() < 0.01
    np.testing.assert_allclose(seq.z[vis], x_cam[..., 2][vis], atol=1e-9)
    err_ply = np.linalg.norm(
        project(seq.K, np.einsum("fij,lj->fli", seq.cam_T_world[:, :3, :3],
                                 np.asarray(mesh.vertices)[seq.landmark_vertex_ids])
                + seq.cam_T_world[:, None, :3, 3]) - seq.uv, axis=-1)[vis]
    assert err_ply.max() < 0.01


def _raycast_depth_error(seq, tri, i):
    """|stored depth - z of trimesh's float64 ray hit| at the pixel centres nearest frame i's
    visible landmarks: the renderer's depth map against an independent ray caster (the
    visibility flags themselves are defined with the stored depth, so checking the depth at
    landmark uv against z would only test the definition)."""
    T, K = seq.cam_T_world[i], seq.K
    R, t = T[:3, :3], T[:3, 3]
    rc = np.unique(np.round(seq.uv[i, seq.visible[i]]).astype(int)[:, ::-1], axis=0)
    d = seq.depth(i)[rc[:, 0], rc[:, 1]]
    rays = np.stack([(rc[:, 1] - K[0, 2]) / K[0, 0], (rc[:, 0] - K[1, 2]) / K[1, 1],
                     np.ones(len(rc))], 1) @ R
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    origins = np.broadcast_to(camera_center(T), rays.shape).copy()
    hits, idx, _ = tri.ray.intersects_location(origins, rays, multiple_hits=False)
    z = np.full(len(rc), np.inf)
    z[idx] = (hits @ R.T + t)[:, 2]
    # background in the depth map must be a miss of the ray caster (error 0), and vice versa
    return np.where(d > 0, np.abs(z - d), np.where(np.isinf(z), 0.0, np.inf)), d > 0


def test_stored_depth_matches_an_independent_ray_cast(seq21):
    """Measured ~2e-4 mm at the pixel centres nearest the visible landmarks; those that show
    background (a landmark on the silhouette) are misses of the ray caster too."""
    seq = load_sequence(seq21)
    tri = trimesh.load(seq21 / "mesh.ply", process=False)
    for i in (0, 10, 20):
        err, fg = _raycast_depth_error(seq, tri, i)
        assert fg.sum() > 300 and err.max() < 0.01


def test_far_side_never_visible_and_raycast_agrees(seq21):
    """At +-60 degrees: no landmark facing away is flagged visible; of those lying > 20 mm
    beyond the midline on the far side at most 1% are (the far cheek's silhouette), and each
    of them passes an independent ray cast (the first hit from the camera centre is within
    1 mm of the landmark), as do >= 95% of all visible ones."""
    seq = load_sequence(seq21)
    mesh = trimesh.load(seq21 / "mesh.ply", process=False)
    np.asarray(mesh.vertices, dtype=np.float64)
    normals = np.asarray(mesh.vertex_normals)  # trimesh's own normals, not ours
    X = seq.landmark_xyz
    n = normals[seq.landmark_vertex_ids]
    for i in (0, len(seq) - 1, 10):
        vis = seq.visible[i]
        C = camera_center(seq.cam_T_world[i])
        yaw = seq.yaw_deg[i]
        far = np.zeros(len(X), bool)
        if abs(yaw) > 59:
            assert not (vis & (np.einsum("ij,ij->i", n, C - X) < -0.05 * np.linalg.norm(
                C - X, axis=1))).any()
            far = -np.sign(yaw) * X[:, 0] > 20.0  # beyond the midline, away from the camera
            assert far.sum() > 100 and (vis & far).sum() <= 0.01 * far.sum()
        d = X[vis] - C
        dist = np.linalg.norm(d, axis=1)
        # trimesh's own float64 ray-triangle test (needs rtree), independent of the renderer
        origins = np.broadcast_to(C, d.shape).copy()
        hits, ray_idx, _ = mesh.ray.intersects_location(origins, d / dist[:, None],
                                                         multiple_hits=False)
        t_hit = np.full(len(d), np.inf)
        t_hit[ray_idx] = np.linalg.norm(hits - origins[ray_idx], axis=1)
        seen = np.abs(t_hit - dist) < 1.0
        assert np.mean(seen) >= 0.95 and seen[far[vis]].all()


def test_same_seed_same_sequence_different_seed_differs(tmp_path, builtin_face):
    mesh, _ = builtin_face
    cfg = RenderConfig(width=96, height=96, focal=125.0, landmarks=200,
                       trajectory=TrajectoryConfig(frames=4, roll_jitter=3.0,
                                                   distance_jitter=10.0),
                       write_mesh=False)
    a = load_sequence(render_sequence(mesh, tmp_path / "a", cfg, seed=5).path)
    b = load_sequence(render_sequence(mesh, tmp_path / "b", cfg, seed=5).path)
    c = load_sequence(render_sequence(mesh, tmp_path / "c", cfg, seed=6).path)
    for k in ("cam_T_world", "uv", "visible", "z", "landmark_xyz"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    for i in range(4):
        np.testing.assert_array_equal(a.image(i), b.image(i))
        np.testing.assert_array_equal(a.depth(i), b.depth(i))
        np.testing.assert_array_equal(a.mask(i), b.mask(i))
    assert (tmp_path / "a/colmap/images.txt").read_text() == \
        (tmp_path / "b/colmap/images.txt").read_text()
    assert np.abs(a.cam_T_world - c.cam_T_world).max() > 0.5
    assert np.abs(a.image(0).astype(int) - c.image(0).astype(int)).mean() > 2
    assert a.meta["lighting"] != c.meta["lighting"]


def test_existing_folder_and_interrupted_write(tmp_path, builtin_face, monkeypatch):
    mesh, _ = builtin_face
    cfg = RenderConfig(width=64, height=64, focal=80.0, landmarks=68,
                       trajectory=TrajectoryConfig(frames=3))
    out = tmp_path / "s"
    render_sequence(mesh, out, cfg, seed=1)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(InputError, match=str(out)):
        render_sequence(mesh, out, cfg, seed=2)

    calls = {"n": 0}
    real = writer_mod.write_png

    def failing_write_png(path, array, compress_level=1):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full (simulated)")
        real(path, array, compress_level)

    monkeypatch.setattr(writer_mod, "write_png", failing_write_png)
    with pytest.raises(OSError, match="simulated"):
        render_sequence(mesh, out, cfg, seed=2, overwrite=True)
    with pytest.raises(OSError, match="simulated"):
        calls["n"] = 0
        render_sequence(mesh, tmp_path / "new", cfg, seed=2)
    # nothing partial left behind, the old sequence untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    monkeypatch.setattr(writer_mod, "write_png", real)
    render_sequence(mesh, out, cfg, seed=2, overwrite=True)
    assert load_sequence(out).meta["seed"] == 2


def test_too_many_landmarks_is_an_input_error(tmp_path, plane_mesh):
    m = plane_mesh(np.array([[[0, 0, 0], [10, 0, 0], [0, 10, 0.0]]]))
    with pytest.raises(InputError, match="landmarks"):
        render_sequence(m, tmp_path / "x", RenderConfig(landmarks=68), seed=0)
    assert not (tmp_path / "x").exists()


def test_ict_sequence(tmp_path, ict_dir):
    """ICT-FaceKit faces render with consistent ground truth too."""
    from facesfm.faces.ict import ICTFaceModel

    mesh, _ = ICTFaceModel(ict_dir).sample(3)
    cfg = RenderConfig(trajectory=TrajectoryConfig(indices=(0, 30, 60)), write_mesh=False)
    seq = load_sequence(render_sequence(mesh, tmp_path / "ict", cfg, seed=3).path)
    vis = seq.visible
    assert vis[1].sum() > 450 and vis[0].sum() > 250 and vis[2].sum() > 250
    x_cam = np.einsum("fij,lj->fli", seq.cam_T_world[:, :3, :3], seq.landmark_xyz) \
        + seq.cam_T_world[:, None, :3, 3]
    assert np.linalg.norm(project(seq.K, x_cam) - seq.uv, axis=-1)[vis].max() < 0.01
    tri = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    for i in range(3):
        err, fg = _raycast_depth_error(seq, tri, i)
        assert fg.sum() > 200 and err.max() < 0.01
    # no landmark labelled visible faces away from its camera by the facing test's normal
    # (the surface patch within cfg.facing_radius of it)
    n = landmark_normals(mesh.vertices, mesh.faces, seq.landmark_vertex_ids, cfg.facing_radius)
    for i in (0, 2):
        C = camera_center(seq.cam_T_world[i])
        assert not (vis[i] & (np.einsum("ij,ij->i", n, C - seq.landmark_xyz) <= 0)).any()
