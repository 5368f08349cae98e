"""The COLMAP export reads back with pycolmap with the same poses and observations."""

import numpy as np
import pytest

from facesfm.data.colmap import rotation_to_quaternion
from facesfm.data.format import load_sequence


def _quat_to_matrix(q):
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def test_quaternion_convention():
    """Round trip on random rotations and the hard cases (identity, 180 degrees about each
    axis and about a diagonal), where a naive trace formula divides by ~0."""
    from scipy.spatial.transform import Rotation

    Rs = list(Rotation.random(200, random_state=0).as_matrix())
    Rs += [np.eye(3), np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])]
    Rs.append(Rotation.from_rotvec(np.pi * np.array([1, 1, 0]) / np.sqrt(2)).as_matrix())
    for R in Rs:
        q = rotation_to_quaternion(R)
        np.testing.assert_allclose(_quat_to_matrix(q), R, atol=1e-12)
        assert q[0] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
    # scipy agrees (it orders x, y, z, w)
    R = Rotation.from_euler("xyz", [30, -50, 170], degrees=True)
    x, y, z, w = R.as_quat()
    np.testing.assert_allclose(rotation_to_quaternion(R.as_matrix()),
                               np.sign(w) * np.array([w, x, y, z]), atol=1e-12)


def test_pycolmap_reads_matching_model(small_seq):
    pycolmap = pytest.importorskip("pycolmap")
    seq = load_sequence(small_seq)
    rec = pycolmap.Reconstruction(str(small_seq / "colmap"))
    assert rec.num_images() == len(seq) and rec.num_cameras() == 1
    cam = rec.cameras[1]
    assert (cam.width, cam.height) == (128, 128)
    np.testing.assert_allclose(cam.params, [170, 170, 64.0, 64.0])  # cx + 0.5
    seen = seq.visible.any(0)
    assert rec.num_points3D() == seen.sum()
    for i in range(len(seq)):
        img = rec.images[i + 1]
        assert img.name == f"{i:06d}.png"
        T = (
            img.cam_from_world().matrix()
            if callable(img.cam_from_world)
            else img.cam_from_world.matrix()
        )
        np.testing.assert_allclose(T, seq.cam_T_world[i, :3], atol=1e-9)
        pts = img.points2D
        ids = np.array([p.point3D_id for p in pts]) - 1
        np.testing.assert_array_equal(ids, np.flatnonzero(seq.visible[i]))
        xy = np.array([p.xy for p in pts])
        np.testing.assert_allclose(xy - 0.5, seq.uv[i, ids], atol=1e-9)
        # COLMAP's own projection of the 3-D points lands on the stored 2-D points
        X = np.array([rec.points3D[j + 1].xyz for j in ids])
        proj = np.array([cam.img_from_cam(T[:, :3] @ x + T[:, 3]) for x in X])
        np.testing.assert_allclose(proj, xy, atol=1e-6)
    j = int(np.flatnonzero(seen)[0])
    p = rec.points3D[j + 1]
    np.testing.assert_allclose(p.xyz, seq.landmark_xyz[j], atol=1e-9)
    assert p.track.length() == seq.visible[:, j].sum()


def test_frame_without_visible_landmarks_exports_and_reads_back(tmp_path):
    """A frame that sees no landmark (face out of view) is a valid image with no 2D points."""
    pycolmap = pytest.importorskip("pycolmap")
    from facesfm.data.colmap import write_colmap_text
    from facesfm.geometry.camera import intrinsics, look_at, project, transform

    K = intrinsics(100.0, 64, 64)
    T = np.stack([look_at(np.array([x, 0.0, 300.0]), np.zeros(3)) for x in (-20.0, 0.0, 20.0)])
    xyz = np.random.default_rng(0).normal(scale=10.0, size=(5, 3))
    uv = project(K, transform(T, xyz))
    visible = np.ones((3, 5), bool)
    visible[1] = False
    write_colmap_text(tmp_path, K, 64, 64, T, ["a.png", "b.png", "c.png"], np.arange(5), xyz,
                      uv, visible)
    rec = pycolmap.Reconstruction(str(tmp_path))
    assert len(rec.images) == 3 and len(rec.points3D) == 5
    assert len(rec.images[2].points2D) == 0 and len(rec.images[1].points2D) == 5
    for p in rec.points3D.values():
        assert p.track.length() == 2


def test_names_with_spaces_read_back_whole(tmp_path):
    """COLMAP splits images.txt lines at spaces: a name with one is written with '_', and
    pycolmap reads every image back under its own name (it read all as 'frame' before)."""
    pycolmap = pytest.importorskip("pycolmap")
    from facesfm.data.colmap import colmap_name, write_colmap_text
    from facesfm.geometry.camera import intrinsics, look_at, project, transform

    K = intrinsics(100.0, 64, 64)
    T = np.stack([look_at(np.array([x, 0.0, 300.0]), np.zeros(3)) for x in (-20.0, 0.0, 20.0)])
    xyz = np.random.default_rng(0).normal(scale=10.0, size=(5, 3))
    uv = np.stack([project(K, transform(t, xyz)) for t in T])
    names = ["frame 1.png", "frame\t2.png", "frame_3.png"]
    write_colmap_text(tmp_path, K, 64, 64, T, names, np.arange(5), xyz, uv,
                      np.ones((3, 5), bool))
    rec = pycolmap.Reconstruction(str(tmp_path))
    assert sorted(rec.images[i].name for i in (1, 2, 3)) == ["frame_1.png", "frame_2.png",
                                                              "frame_3.png"]
    assert [colmap_name(n) for n in names] == ["frame_1.png", "frame_2.png", "frame_3.png"]
