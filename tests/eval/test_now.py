"""The NoW error: zero for the truth, blind to a similarity (not the metric variant), the size of
a known offset, and a crop that keeps only the face."""

import numpy as np
import pytest

from facesfm.eval.now import NOSE_TIP_ID, NOW_LANDMARK_IDS, NowConfig, now_error, now_scan
from facesfm.faces.builtin import BuiltinFaceModel
from facesfm.geometry.mesh import vertex_normals
from facesfm.geometry.similarity import Sim3, umeyama

CFG = NowConfig(samples=8000)


@pytest.fixture(scope="module")
def face():
    mesh, _ = BuiltinFaceModel(texture_size=0).sample(3)
    lm = mesh.vertices[mesh.landmark_vertices[list(NOW_LANDMARK_IDS)]]
    nose = mesh.vertices[mesh.landmark_vertices[NOSE_TIP_ID]]
    return mesh, lm, now_scan(mesh.vertices, mesh.faces, nose, CFG), nose


def test_the_crop_keeps_a_sphere_around_the_nose_tip(face):
    mesh, _, scan, nose = face
    r = np.linalg.norm(scan - nose, axis=1)
    assert r.max() <= CFG.crop_radius_mm and 1000 < len(scan) < CFG.samples
    small = now_scan(mesh.vertices, mesh.faces, nose, NowConfig(samples=8000, crop_radius_mm=50))
    assert np.linalg.norm(small - nose, axis=1).max() <= 50 and len(small) < len(scan)


def test_the_truth_scores_zero_and_a_similarity_is_aligned_away(face):
    mesh, lm, scan, _ = face
    for metric in (False, True):
        r = now_error(scan, lm, mesh.vertices, mesh.faces, lm, metric, CFG)
        assert r.median_mm < 1e-3 and r.mean_mm < 1e-3 and abs(r.scale - 1) < 1e-6
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    S = Sim3(q, np.array([30.0, -200.0, 500.0]), 0.8)  # what a solve's own frame may be
    r = now_error(scan, lm, S.apply(mesh.vertices), mesh.faces, S.apply(lm), False, CFG)
    assert r.mean_mm < 1e-3 and r.scale == pytest.approx(1 / 0.8, rel=1e-6)
    # the metric variant keeps the scale: a face 20% small is that far off
    m = now_error(scan, lm, S.apply(mesh.vertices), mesh.faces, S.apply(lm), True, CFG)
    assert m.scale == 1.0 and m.mean_mm > 3.0


def test_a_bump_measures_its_height(face):
    """The nose pushed out along the normals by a smooth bump (3 mm at the tip, 0 beyond
    30 mm): the error is about the bump's height averaged over the scan points (the
    least-squares refinement trades some of the bump against the rest of the face, so not
    exactly), and most of the face fits (median well below the mean)."""
    mesh, lm, scan, nose = face
    n = vertex_normals(mesh.vertices, mesh.faces)

    def bump(x):
        return 3.0 * np.clip(1 - np.linalg.norm(x - nose, axis=1) / 30.0, 0, None)

    v = mesh.vertices + bump(mesh.vertices)[:, None] * n
    lm_v = v[mesh.landmark_vertices[list(NOW_LANDMARK_IDS)]]
    expected = bump(scan).mean()
    assert expected > 0.02  # the bump is a visible share of the scan
    m = now_error(scan, lm, v, mesh.faces, lm_v, True, CFG)
    assert 0.8 * expected < m.mean_mm < 2 * expected and m.median_mm < 0.5 * m.mean_mm, (
        m, expected)
    # the scale-free variant takes its scale from the landmarks and keeps it (a free ICP
    # scale could shrink the scan onto a patch of the mesh)
    s = now_error(scan, lm, v, mesh.faces, lm_v, False, CFG)
    assert s.scale == pytest.approx(umeyama(lm_v, lm).s, rel=1e-9) and s.scale != 1.0
    assert 0.8 * expected < s.mean_mm < 4 * expected
    # in the scan's millimetres, whatever the reconstruction's own scale
    S = Sim3(np.eye(3), np.array([5.0, 0.0, -40.0]), 0.5)
    h = now_error(scan, lm, S.apply(v), mesh.faces, S.apply(lm_v), False, CFG)
    assert h.mean_mm == pytest.approx(s.mean_mm, rel=0.02) and h.scale == pytest.approx(
        2 * s.scale, rel=0.02)


def test_missing_landmarks_are_an_error(face):
    mesh, lm, scan, _ = face
    bad = lm.copy()
    bad[4] = np.nan
    with pytest.raises(ValueError, match="all 7 landmarks"):
        now_error(scan, lm, mesh.vertices, mesh.faces, bad)
    with pytest.raises(ValueError, match="its 7 landmarks"):
        now_error(scan, lm, mesh.vertices, mesh.faces, lm[:5])
