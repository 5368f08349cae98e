import numpy as np
import pytest
from eval_shapes import random_rotation

from facesfm.eval.align import (
    AlignConfig,
    Sim3,
    align_reconstruction,
    have_open3d,
    icp,
    surface_samples,
    umeyama,
)

BACKENDS = [
    "numpy",
    pytest.param(
        "open3d",
        marks=pytest.mark.skipif(
            not have_open3d(), reason="open3d not installed: pip install 'facesfm[open3d]'"
        ),
    ),
]


def test_umeyama_recovers_known_sim3_exactly():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(50, 3)) * [40, 60, 30]
    true = Sim3(random_rotation(rng), rng.normal(size=3) * 100, 2.7)
    S = umeyama(src, true.apply(src))
    assert np.allclose(S.R, true.R, atol=1e-12)
    assert np.allclose(S.t, true.t, atol=1e-9)
    assert abs(S.s - 2.7) < 1e-12
    assert np.linalg.det(S.R) == pytest.approx(1.0, abs=1e-12)
    rigid = umeyama(src, Sim3(true.R, true.t).apply(src), with_scale=False)
    assert rigid.s == 1.0 and np.allclose(rigid.t, true.t, atol=1e-9)


def test_umeyama_never_returns_a_reflection():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(30, 3))
    dst = src * [1, 1, -1]  # mirrored: the best proper rotation is not the mirror
    S = umeyama(src, dst)
    assert np.linalg.det(S.R) == pytest.approx(1.0, abs=1e-12)


def test_umeyama_weights_ignore_zero_weight_outliers():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(20, 3))
    true = Sim3(random_rotation(rng), np.array([1.0, 2.0, 3.0]), 0.5)
    dst = true.apply(src)
    dst[:3] += 50.0
    w = np.ones(20)
    w[:3] = 0
    S = umeyama(src, dst, weights=w)
    assert np.allclose(S.matrix(), true.matrix(), atol=1e-10)


def test_umeyama_shape_errors():
    with pytest.raises(ValueError, match="src"):
        umeyama(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="at least 3"):
        umeyama(np.zeros((2, 3)), np.zeros((2, 3)))


def test_sim3_algebra():
    rng = np.random.default_rng(4)
    a = Sim3(random_rotation(rng), rng.normal(size=3), 1.7)
    b = Sim3(random_rotation(rng), rng.normal(size=3), 0.4)
    x = rng.normal(size=(10, 3))
    assert np.allclose((a @ b).apply(x), a.apply(b.apply(x)), atol=1e-12)
    assert np.allclose(a.inverse().apply(a.apply(x)), x, atol=1e-12)
    assert np.allclose(Sim3.from_matrix(a.matrix()).matrix(), a.matrix(), atol=1e-12)
    assert Sim3(random_rotation(rng, 30.0), np.zeros(3)).rotation_angle_deg() == pytest.approx(
        30.0, abs=1e-9
    )
    assert Sim3(random_rotation(rng, 1e-6), np.zeros(3)).rotation_angle_deg() == pytest.approx(
        1e-6, rel=1e-6
    )


@pytest.fixture(scope="module")
def front_samples(face_mesh):
    """Points sampled on the front of the face-like mesh (a partial 'reconstruction')."""
    v, f = face_mesh
    p = surface_samples(v, f, 6000, seed=5)
    return p[p[:, 2] > 20]


def _landmark_pairs(v, true_inv, rng, noise=1.0):
    lm = rng.choice(np.flatnonzero(v[:, 2] > 30), 68, replace=False)
    return true_inv.apply(v[lm] + rng.normal(scale=noise, size=(68, 3))), v[lm]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_scale", [False, True])
def test_point_to_surface_icp_recovers_known_offset(face_mesh, front_samples, backend, with_scale):
    """Surface samples (not vertices) under a known 3 deg / 2.7 mm offset (and scale 1.3):
    landmark init with 1 mm noise, then ICP must land within 0.1 mm / 0.05 deg (it is exact
    up to the backend's precision)."""
    v, f = face_mesh
    rng = np.random.default_rng(0)
    true = Sim3(random_rotation(rng, 3.0), np.array([2.0, -1.5, 1.0]), 1.3 if with_scale else 1.0)
    recon = true.inverse().apply(front_samples)
    pairs = _landmark_pairs(v, true.inverse(), rng)
    res = align_reconstruction(
        recon, v, f, init_pairs=pairs, config=AlignConfig(with_scale=with_scale, backend=backend)
    )
    E = res.transform @ true.inverse()
    init_err = res.init @ true.inverse()
    assert init_err.rotation_angle_deg() > 0.1  # the init alone is not good enough
    assert E.rotation_angle_deg() < 1e-4
    assert np.linalg.norm(E.t) < 1e-4
    assert abs(E.s - 1.0) < 1e-7
    assert res.fitness == 1.0 and res.inlier_rmse < 1e-4
    assert np.abs(res.aligned - front_samples).max() < 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_point_to_point_icp_on_vertices_recovers_rigid_offset(face_mesh, backend):
    """Classic point-to-point ICP: the front vertices of the GT moved by 2 deg / 2 mm, started
    from the identity, converge onto the exact correspondences."""
    v, _ = face_mesh
    rng = np.random.default_rng(6)
    pts = v[v[:, 2] > 20]
    true = Sim3(random_rotation(rng, 2.0), np.array([1.5, 1.0, -1.2]))
    recon = true.inverse().apply(pts)
    cfg = AlignConfig(
        with_scale=False,
        method="point_to_point",
        backend=backend,
        target_samples=0,
        max_iterations=200,
    )
    res = icp(recon, v, Sim3.identity(), cfg)
    E = res.transform @ true.inverse()
    assert E.rotation_angle_deg() < 0.05
    assert np.linalg.norm(E.t) < 0.1
    assert res.fitness == 1.0


def test_point_to_point_backends_agree(face_mesh, front_samples):
    """numpy and open3d point-to-point ICP run the same algorithm: same answer."""
    if not have_open3d():
        pytest.skip("open3d not installed: pip install 'facesfm[open3d]'")
    v, f = face_mesh
    rng = np.random.default_rng(7)
    true = Sim3(random_rotation(rng, 3.0), np.array([2.0, -1.5, 1.0]), 1.1)
    recon = true.inverse().apply(front_samples)
    pairs = _landmark_pairs(v, true.inverse(), rng)
    out = []
    for backend in ("numpy", "open3d"):
        cfg = AlignConfig(method="point_to_point", backend=backend, target_samples=20000)
        out.append(align_reconstruction(recon, v, f, init_pairs=pairs, config=cfg))
    assert np.allclose(out[0].transform.matrix(), out[1].transform.matrix(), atol=1e-6)
    assert out[0].fitness == out[1].fitness
    # and it is accurate to the sampling resolution of the target
    E = out[0].transform @ true.inverse()
    assert E.rotation_angle_deg() < 0.3 and np.linalg.norm(E.t) < 0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_point_to_plane_icp_on_vertices(face_mesh, backend):
    v, f = face_mesh
    rng = np.random.default_rng(8)
    pts = v[v[:, 2] > 20]
    true = Sim3(random_rotation(rng, 2.0), np.array([1.0, -1.0, 0.5]))
    recon = true.inverse().apply(pts)
    cfg = AlignConfig(with_scale=False, method="point_to_plane", backend=backend)
    res = align_reconstruction(recon, v, f, init_pairs=(recon[:50], pts[:50]), config=cfg)
    E = res.transform @ true.inverse()
    assert E.rotation_angle_deg() < 1e-3 and np.linalg.norm(E.t) < 1e-3


def test_bare_point_cloud_uses_point_to_point(face_mesh):
    v, _ = face_mesh
    pts = v[v[:, 2] > 20]
    shift = Sim3(np.eye(3), np.array([0.5, 0.2, -0.3]))
    res = align_reconstruction(
        shift.apply(pts),
        v,
        None,
        init_pairs=(shift.apply(pts[:10]), pts[:10]),
        config=AlignConfig(with_scale=False, backend="numpy"),
    )
    assert res.extra["method"] == "point_to_surface"  # requested; ran as point-to-point
    assert np.abs(res.aligned - pts).max() < 1e-9


def test_config_validation():
    with pytest.raises(ValueError, match="method"):
        AlignConfig(method="nearest")
    with pytest.raises(ValueError, match="rigid"):
        AlignConfig(method="point_to_plane", with_scale=True)
    with pytest.raises(ValueError, match="backend"):
        AlignConfig(backend="cuda")


@pytest.mark.ict
def test_alignment_on_the_ict_face(ict_dir):
    """A real face surface (ICT-FaceKit neutral mesh, cm -> mm, with eyes, teeth and seams):
    a partial, noise-free, similarity-moved sampling of the face is registered back exactly,
    and both closest-point backends agree on it."""
    import trimesh

    from facesfm.eval.surface import closest_points_on_mesh

    m = trimesh.load(ict_dir / "generic_neutral_mesh.obj", process=False, force="mesh")
    v = np.asarray(m.vertices, dtype=np.float64) * 10.0
    f = np.asarray(m.faces, dtype=np.int64)
    rng = np.random.default_rng(12)
    p = surface_samples(v, f, 30000, seed=1)
    p = p[(p[:, 2] > 60) & (np.abs(p[:, 0]) < 60)][:4000]  # the front of the face
    true = Sim3(random_rotation(rng, 4.0), np.array([3.0, -2.0, 5.0]), 1.2)
    recon = true.inverse().apply(p)
    lm = rng.choice(np.flatnonzero(v[:, 2] > 80), 68, replace=False)
    pairs = (true.inverse().apply(v[lm] + rng.normal(scale=1.0, size=(68, 3))), v[lm])
    res = align_reconstruction(recon, v, f, init_pairs=pairs, config=AlignConfig())
    E = res.transform @ true.inverse()
    assert E.rotation_angle_deg() < 1e-3 and np.linalg.norm(E.t) < 1e-3 and abs(E.s - 1) < 1e-5
    assert res.inlier_rmse < 1e-3
    if have_open3d():
        q = p[:300] + rng.normal(scale=3.0, size=(300, 3))
        _, d_np, _ = closest_points_on_mesh(q, v, f, backend="numpy")
        _, d_o3, _ = closest_points_on_mesh(q, v, f, backend="open3d")
        assert np.abs(d_np - d_o3).max() < 1e-3


def test_max_points_subsets_the_fit_but_aligns_everything(face_mesh, front_samples):
    v, f = face_mesh
    rng = np.random.default_rng(13)
    true = Sim3(random_rotation(rng, 2.0), np.array([1.0, 1.0, -1.0]))
    recon = true.inverse().apply(front_samples)
    pairs = _landmark_pairs(v, true.inverse(), rng)
    cfg = AlignConfig(with_scale=False, backend="numpy", max_points=500)
    res = align_reconstruction(recon, v, f, init_pairs=pairs, config=cfg)
    assert res.aligned.shape == recon.shape
    assert np.abs(res.aligned - front_samples).max() < 1e-6


def test_missing_open3d_gives_install_hint_and_numpy_fallback(monkeypatch, face_mesh):
    import sys

    from facesfm.eval.align import require_open3d
    from facesfm.eval.surface import MeshClosestPoint

    monkeypatch.setitem(sys.modules, "open3d", None)  # makes `import open3d` fail
    assert not have_open3d()
    with pytest.raises(ImportError, match=r"pip install 'facesfm\[open3d\]'"):
        require_open3d()
    v, f = face_mesh
    assert MeshClosestPoint(v, f).backend == "numpy"  # auto falls back
    with pytest.raises(ImportError, match="facesfm"):
        MeshClosestPoint(v, f, backend="open3d")


def test_a_collapsed_alignment_is_an_error_not_a_perfect_score(face_mesh, front_samples):
    """Landmark pairs that all map to one GT point give a near-zero Umeyama scale; the cloud
    then sits on the surface with ~0 residual. That must raise, not score 0 mm."""
    from facesfm.eval.align import AlignmentError

    v, f = face_mesh
    rng = np.random.default_rng(3)
    src = front_samples[rng.choice(len(front_samples), 20, replace=False)]
    dst = np.repeat(v[:1], 20, 0) + rng.normal(scale=1e-9, size=(20, 3))
    with pytest.raises(AlignmentError, match="collapsed"):
        align_reconstruction(front_samples, v, f, init_pairs=(src, dst))
    # the same cloud with sane pairs aligns
    res = align_reconstruction(front_samples, v, f, init_pairs=(src, src))
    assert res.inlier_rmse < 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_icp_at_the_landmark_scale_keeps_that_scale_and_refines_the_pose(
    face_mesh, front_samples, backend
):
    """``icp_scale=False``: the scale is the landmark Umeyama scale exactly, and ICP still
    corrects the rotation and translation of the noisy landmark start."""
    v, f = face_mesh
    rng = np.random.default_rng(0)
    true = Sim3(random_rotation(rng, 3.0), np.array([2.0, -1.5, 1.0]), 1.3)
    recon = true.inverse().apply(front_samples)
    pairs = _landmark_pairs(v, true.inverse(), rng)
    res = align_reconstruction(recon, v, f, init_pairs=pairs,
                               config=AlignConfig(icp_scale=False, backend=backend))
    assert res.transform.s == pytest.approx(umeyama(*pairs).s, rel=1e-12)
    assert res.init.s == res.transform.s
    E = res.transform @ true.inverse()
    init_err = res.init @ true.inverse()
    assert abs(E.s - 1.0) > 1e-4  # the landmark scale is not the exact one ...
    assert E.rotation_angle_deg() < 0.5 * init_err.rotation_angle_deg()  # ... the pose improves
    d = np.linalg.norm(res.aligned - front_samples, axis=1)
    assert d.mean() < np.linalg.norm(res.init.apply(recon) - front_samples, axis=1).mean()


def test_a_free_icp_scale_shrinks_a_noisy_cloud_and_the_landmark_scale_does_not(
    face_mesh, front_samples
):
    """Surface samples with 5 mm of noise, landmarks with 1 mm: a free ICP scale pulls the
    cloud in (the residual of a noisy point falls as the cloud shrinks), by several per cent;
    at the landmark scale the cloud keeps its size."""
    v, f = face_mesh
    rng = np.random.default_rng(1)
    cloud = front_samples + rng.normal(scale=5.0, size=front_samples.shape)
    lm = rng.choice(np.flatnonzero(v[:, 2] > 30), 68, replace=False)
    pairs = (v[lm] + rng.normal(scale=1.0, size=(68, 3)), v[lm])
    free = align_reconstruction(cloud, v, f, init_pairs=pairs, config=AlignConfig(backend="numpy"))
    fixed = align_reconstruction(cloud, v, f, init_pairs=pairs,
                                 config=AlignConfig(icp_scale=False, backend="numpy"))
    s_lm = umeyama(*pairs).s
    assert abs(s_lm - 1.0) < 0.01
    assert free.transform.s < 0.97
    assert fixed.transform.s == pytest.approx(s_lm, rel=1e-12)
