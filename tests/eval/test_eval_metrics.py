import numpy as np
import pytest
import torch
from eval_shapes import ellipsoid_mesh, random_rotation

from facesfm.eval.align import Sim3, have_open3d
from facesfm.eval.metrics import (
    align_trajectories,
    ate,
    depth_metrics,
    error_stats,
    landmark_errors,
    point_to_surface_distances,
    pose_errors,
    poses_in_frame,
    reconstruction_metrics,
    rotation_angle_deg,
    rpe,
    scores_from_counts,
    visibility_scores,
)
from facesfm.eval.surface import closest_points_on_mesh, point_triangle_closest
from facesfm.geometry.camera import camera_center, look_at

BACKENDS = [
    "numpy",
    pytest.param(
        "open3d",
        marks=pytest.mark.skipif(
            not have_open3d(), reason="open3d not installed: pip install 'facesfm[open3d]'"
        ),
    ),
]


def test_error_stats_numbers():
    s = error_stats([3.0, 4.0, 0.0, 1.0])
    assert s.mean == 2.0 and s.median == 2.0 and s.max == 4.0 and s.count == 4
    assert s.mse == pytest.approx(26 / 4, abs=1e-15)
    assert s.rmse == pytest.approx(np.sqrt(26 / 4), abs=1e-15)
    assert error_stats([]).count == 0 and np.isnan(error_stats([]).mean)


# ----------------------------------------------------------------------------- surface


def _face_points(v, f, rng, n):
    """Random points inside random triangles, and those triangles' outward unit normals."""
    t = rng.integers(0, len(f), n)
    bary = rng.dirichlet([2, 2, 2], n)
    tri = v[f[t]]
    p = np.einsum("nk,nkd->nd", bary, tri)
    nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    nrm *= np.sign(np.sum(nrm * p, axis=1))[:, None]  # outward (the ellipsoid contains 0)
    return p, nrm


@pytest.mark.parametrize("backend", BACKENDS)
def test_point_to_surface_distance_of_normal_offsets(backend):
    """On a convex mesh, a point pushed out along a face normal by d is exactly d away."""
    v, f = ellipsoid_mesh()
    rng = np.random.default_rng(0)
    p, n = _face_points(v, f, rng, 500)
    d = rng.uniform(0.0, 5.0, len(p))
    got = point_to_surface_distances(p + d[:, None] * n, v, f, backend=backend)
    tol = 1e-9 if backend == "numpy" else 2e-4  # open3d works in float32
    assert np.abs(got - d).max() < tol
    # inside the head: the distance is at most d (another face may be closer)
    got_in = point_to_surface_distances(p - 0.5 * n, v, f, backend=backend)
    assert np.all(got_in <= 0.5 + tol) and np.median(got_in) == pytest.approx(0.5, abs=tol)


def test_point_triangle_closest_regions():
    a, b, c = np.array([0.0, 0, 0]), np.array([2.0, 0, 0]), np.array([0.0, 2, 0])
    pts = np.array(
        [
            [0.5, 0.5, 3.0],  # above the face
            [-1.0, -1.0, 1.0],  # vertex a
            [4.0, -1.0, 0.0],  # vertex b
            [-1.0, 5.0, 0.0],  # vertex c
            [1.0, -2.0, 0.0],  # edge ab
            [-3.0, 1.0, 0.0],  # edge ac
            [2.0, 2.0, 1.0],  # edge bc
        ]
    )
    want = np.array(
        [[0.5, 0.5, 0], [0, 0, 0], [2, 0, 0], [0, 2, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]]
    )
    n = len(pts)
    got = point_triangle_closest(pts, np.tile(a, (n, 1)), np.tile(b, (n, 1)), np.tile(c, (n, 1)))
    assert np.allclose(got, want, atol=1e-15)


def test_numpy_closest_points_match_brute_force(face_mesh):
    """Near and far queries, on the head plus two big triangles (a mix of triangle sizes like
    a real scan's): the pruned search equals the brute-force minimum over all triangles."""
    v, f = face_mesh
    big = np.array(
        [
            [-300.0, -300.0, -150.0],
            [300.0, -300.0, -150.0],
            [0.0, 300.0, -150.0],
            [0.0, -200.0, 200.0],
        ]
    )
    v = np.concatenate([v, big])
    V = len(v)
    f = np.concatenate([f, [[V - 4, V - 3, V - 2], [V - 4, V - 3, V - 1]]])
    rng = np.random.default_rng(1)
    p = np.concatenate(
        [
            v[rng.choice(V - 4, 40)] + rng.normal(scale=6.0, size=(40, 3)),
            rng.normal(scale=200.0, size=(40, 3)),
        ]
    )
    _, d, t = closest_points_on_mesh(p, v, f, backend="numpy")
    tri = v[f]
    hits_big = 0
    for i in range(len(p)):
        allq = point_triangle_closest(np.tile(p[i], (len(f), 1)), tri[:, 0], tri[:, 1], tri[:, 2])
        alld = np.linalg.norm(allq - p[i], axis=1)
        assert d[i] == pytest.approx(alld.min(), abs=1e-12)
        assert alld[t[i]] == pytest.approx(d[i], abs=1e-12)
        hits_big += t[i] >= len(f) - 2
    assert 5 < hits_big < 60  # both kinds of triangle are closest for some queries


# ----------------------------------------------------------------------------- recon


def test_reconstruction_metrics_known_offsets(face_mesh):
    """GT vertices pushed 1 mm along the normal (half of them) and a gap in coverage."""
    from facesfm.geometry.mesh import vertex_normals

    v, f = face_mesh
    n = vertex_normals(v, f)
    front = v[:, 2] > 0
    recon = v[front] + 1.0 * n[front]
    m = reconstruction_metrics(recon, v, f, gt_region=front, threshold_mm=1.5, backend="numpy")
    # nearest GT vertex is the source vertex (mesh spacing ~5 mm >> 1 mm)
    assert m.point_to_point.mean == pytest.approx(1.0, abs=1e-9)
    assert m.point_to_point.count == front.sum() == m.n_points
    # surface is at most 1 mm away, a little less where the surface curves
    assert 0.9 < m.point_to_surface.mean <= 1.0 + 1e-12
    assert m.precision == 1.0 and m.completeness == 1.0 and m.fscore == 1.0
    assert m.completeness_distance.mean == pytest.approx(1.0, abs=1e-9)
    # whole head as GT: the back half is > threshold away from any reconstructed point
    m2 = reconstruction_metrics(recon, v, f, threshold_mm=1.5, backend="numpy")
    assert m2.completeness == pytest.approx(np.mean(front), abs=0.02)
    assert m2.chamfer_mm > 10 * m.chamfer_mm
    # without faces, accuracy is point-to-point
    m3 = reconstruction_metrics(recon, v, None, gt_region=front, threshold_mm=0.5)
    assert m3.point_to_surface is None and m3.precision == 0.0
    assert m3.accuracy.mean == pytest.approx(1.0, abs=1e-9)


# ----------------------------------------------------------------------------- depth


def test_depth_metrics_numbers():
    g = np.full((4, 5), 500.0)
    g[0, 0] = 0.0  # invalid pixel (no surface)
    p = g * 1.1
    p[1, 1] = np.nan
    m = depth_metrics(p, g)
    assert m.count == 18
    assert m.mse == pytest.approx(50.0**2, rel=1e-12)
    assert m.rmse == pytest.approx(50.0, rel=1e-12) and m.mae == pytest.approx(50.0, rel=1e-12)
    assert m.abs_rel == pytest.approx(0.1, rel=1e-12)
    assert m.sq_rel == pytest.approx(2500 / 500, rel=1e-12)
    assert m.abs_rel_median_scaled == pytest.approx(0.0, abs=1e-12)
    assert m.median_scale[0] == pytest.approx(1 / 1.1, rel=1e-12)
    assert m.delta1 == 1.0
    valid = np.zeros((4, 5), bool)
    valid[2] = True
    assert depth_metrics(torch.tensor(p), torch.tensor(g), torch.tensor(valid)).count == 5


def test_depth_metrics_batch_scales_per_image():
    rng = np.random.default_rng(0)
    g = rng.uniform(400, 600, size=(2, 8, 8))
    p = g * np.array([2.0, 0.5])[:, None, None]
    m = depth_metrics(p, g)
    assert np.allclose(m.median_scale, [0.5, 2.0], rtol=1e-12)
    assert m.abs_rel_median_scaled == pytest.approx(0.0, abs=1e-12)
    assert m.abs_rel == pytest.approx(0.75, rel=1e-12)  # mean of 1.0 and 0.5
    assert m.delta1 == 0.0
    with pytest.raises(ValueError, match="pred and gt"):
        depth_metrics(p, g[0])


# ----------------------------------------------------------------------------- poses


def _trajectory(n=9, radius=600.0):
    """Cameras on a yaw arc looking at the head (cam_T_world, OpenCV)."""
    out = []
    for a in np.radians(np.linspace(-40, 40, n)):
        eye = radius * np.array([np.sin(a), 0.05 * np.cos(3 * a), np.cos(a)])
        out.append(look_at(eye, np.zeros(3)))
    return np.stack(out)


def test_rotation_angle_deg():
    rng = np.random.default_rng(0)
    R = np.stack([random_rotation(rng, a) for a in (0.0, 1e-7, 10.0, 179.9)])
    assert np.allclose(rotation_angle_deg(R), [0.0, 1e-7, 10.0, 179.9], rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("gauge", ["sim3", "se3", "first_frame", "first_frame_scaled",
                                   "orientations"])
def test_pose_errors_zero_for_gauge_transformed_trajectory(gauge):
    gt = _trajectory()
    rng = np.random.default_rng(1)
    scale = 1.0 if gauge in ("se3", "first_frame") else 0.37
    S = Sim3(random_rotation(rng), rng.normal(size=3) * 100, scale)  # gt world -> est world
    est = poses_in_frame(S, gt)
    e = pose_errors(est, gt, gauge)
    assert e.rotation_deg.max() < 1e-6 and e.translation_mm.max() < 1e-9
    assert e.ate_mm < 1e-9 and e.gauge.s == pytest.approx(1 / scale, rel=1e-12)
    assert e.rpe.rotation_rmse_deg < 1e-6 and e.rpe.translation_rmse_mm < 1e-9
    assert np.allclose(camera_center(poses_in_frame(e.gauge, est)), camera_center(gt), atol=1e-9)


def test_ate_zero_for_similarity_and_known_value_for_perturbation():
    gt = camera_center(_trajectory(11))
    gt[:, 1] = 0.0  # a planar arc in y = 0
    rng = np.random.default_rng(2)
    S = Sim3(random_rotation(rng), rng.normal(size=3) * 50, 2.5)
    assert ate(S.apply(gt), gt) < 1e-9
    # A perturbation along y with zero mean and zero correlation with the (centred) arc
    # leaves the optimal alignment at rotation I; then with A = sum |y_i|^2, B = sum |d_i|^2:
    # SE3: ATE^2 = B / n; Sim3: s = A / (A + B) and ATE^2 = A B / ((A + B) n).
    y = gt - gt.mean(axis=0)
    a = rng.normal(size=len(gt))
    basis = np.stack([np.ones(len(gt)), y[:, 0], y[:, 2]], axis=1)
    a -= basis @ np.linalg.lstsq(basis, a, rcond=None)[0]
    a *= 3.0 / np.sqrt(np.mean(a**2))  # RMS 3 mm
    d = np.zeros_like(gt)
    d[:, 1] = a
    A, B, n = np.sum(y**2), np.sum(d**2), len(gt)
    assert ate(gt + d, gt, with_scale=False) == pytest.approx(3.0, rel=1e-9)
    assert ate(gt + d, gt) == pytest.approx(np.sqrt(A * B / ((A + B) * n)), rel=1e-9)
    # and it is invariant to a similarity of the perturbed estimate
    assert ate(S.apply(gt + d), gt) == pytest.approx(np.sqrt(A * B / ((A + B) * n)), rel=1e-9)


def test_pose_errors_known_perturbation_of_one_frame():
    gt = _trajectory(7)
    est = gt.copy()
    rng = np.random.default_rng(3)
    dR = random_rotation(rng, 2.0)
    est[3, :3, :3] = dR @ gt[3, :3, :3]  # rotate the camera about its own centre
    est[3, :3, 3] = dR @ gt[3, :3, 3]
    e = pose_errors(est, gt, "first_frame")
    assert e.gauge.rotation_angle_deg() < 1e-9 and e.gauge.s == 1.0
    assert e.rotation_deg[3] == pytest.approx(2.0, abs=1e-9)
    assert np.delete(e.rotation_deg, 3).max() < 1e-6 and e.translation_mm.max() < 1e-9
    # relative errors: pairs (2, 3) and (3, 4) see the 2 degrees, others none
    r = rpe(est, gt)
    assert np.allclose(r.rotation_deg, [0, 0, 2, 2, 0, 0], atol=1e-6)
    # translation of one camera centre by 5 mm
    est2 = gt.copy()
    shift = np.array([3.0, 0.0, 4.0])
    est2[5, :3, 3] -= est2[5, :3, :3] @ shift  # centre moves by +shift
    e2 = pose_errors(est2, gt, "first_frame")
    assert e2.translation_mm[5] == pytest.approx(5.0, abs=1e-9)
    assert np.delete(e2.translation_mm, 5).max() < 1e-9
    assert e2.ate_mm == pytest.approx(5.0 / np.sqrt(7), abs=1e-9)
    assert np.allclose(rpe(est2, gt).translation_mm, [0, 0, 0, 0, 5, 5], atol=1e-9)


def test_orientation_gauge_on_a_short_arc_sees_the_orientation_error_only():
    """Cameras on a -16..+16 degree arc: centres nearly on a line. Each camera turned by 0.3
    deg about its own centre and each centre moved by 2 mm: fitted to the centres, the
    similarity's rotation about the line is loose and adds degrees to every frame; fitted to
    the orientations, the error stays at the cameras' own 0.3 deg."""
    from facesfm.geometry.camera import look_at

    gt = np.stack([look_at(500.0 * np.array([np.sin(a), 0.0, np.cos(a)]), np.zeros(3))
                   for a in np.deg2rad(np.arange(-16, 17, 2))])
    rng = np.random.default_rng(4)
    est = gt.copy()
    for f in range(len(est)):
        dR = random_rotation(rng, 0.3)
        c = camera_center(gt[f:f + 1])[0] + rng.normal(size=3) * 2.0 / np.sqrt(3)
        est[f, :3, :3] = dR @ gt[f, :3, :3]
        est[f, :3, 3] = -est[f, :3, :3] @ c
    S = Sim3(random_rotation(rng), rng.normal(size=3) * 100, 0.8)
    est = poses_in_frame(S, est)
    by_centres = pose_errors(est, gt, "sim3").rotation_deg
    by_orientations = pose_errors(est, gt, "orientations").rotation_deg
    assert by_orientations.max() < 0.6 and abs(by_orientations.mean() - 0.3) < 0.1
    assert by_centres.mean() > 3 * by_orientations.mean()


def test_align_trajectories_rejects_bad_gauge():
    gt = _trajectory(3)
    with pytest.raises(ValueError, match="gauge"):
        align_trajectories(gt, gt, "umeyama")
    with pytest.raises(ValueError, match="est_cam_T_world"):
        pose_errors(gt[:, :3], gt)


# ----------------------------------------------------------------------------- landmarks


def test_landmark_errors_over_visible_only():
    gt = np.zeros((2, 4, 2))
    pred = gt.copy()
    pred[0, 0] = [3.0, 4.0]  # 5 px
    pred[1, 2] = [0.0, 1.0]  # 1 px
    pred[1, 3] = [100.0, 0.0]  # occluded: ignored
    vis = np.ones((2, 4), bool)
    vis[1, 3] = False
    s = landmark_errors(pred, gt, vis)
    assert s.count == 7 and s.mean == pytest.approx(6 / 7, abs=1e-15) and s.median == 0.0
    assert s.max == 5.0
    assert landmark_errors(torch.tensor(pred), torch.tensor(gt)).max == 100.0


def test_f1_from_known_counts():
    s = scores_from_counts(tp=8, fp=2, fn=4, tn=6)
    assert s.precision == pytest.approx(0.8, abs=1e-15)
    assert s.recall == pytest.approx(8 / 12, abs=1e-15)
    assert s.f1 == pytest.approx(2 * 0.8 * (8 / 12) / (0.8 + 8 / 12), abs=1e-15)
    assert s.accuracy == pytest.approx(14 / 20, abs=1e-15)
    assert scores_from_counts(0, 0, 0, 5).f1 == 1.0
    assert scores_from_counts(0, 0, 3).precision == 0.0


def test_visibility_scores_count_confusion():
    gt = np.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0]], bool)
    pred = np.array([[1, 1, 0, 1, 0], [1, 0, 1, 0, 0]], bool)
    s = visibility_scores(pred, gt)
    assert (s.tp, s.fp, s.fn, s.tn) == (4, 1, 2, 3)
    assert s.f1 == pytest.approx(8 / 11, abs=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluate_reconstruction_protocol(face_mesh, backend):
    """Noisy, scaled, moved samples of the face region: the landmark-initialised ICP undoes the
    similarity, and the point-to-surface error is the noise's normal component,
    E|N(0, 0.5)| = 0.5 * sqrt(2 / pi) = 0.399 mm."""
    from facesfm.eval.align import AlignConfig, surface_samples
    from facesfm.eval.metrics import evaluate_reconstruction
    from facesfm.faces.types import FaceMesh

    v, f = face_mesh
    rng = np.random.default_rng(11)
    region = v[:, 2] > 20
    lm_ids = rng.choice(np.flatnonzero(v[:, 2] > 30), 800, replace=False)
    gt = FaceMesh(vertices=v, faces=f, landmark_vertices=lm_ids, face_region=region)
    p = surface_samples(v, f, 40000, seed=3)
    p = p[p[:, 2] > 25]
    true = Sim3(random_rotation(rng, 5.0), np.array([10.0, -4.0, 3.0]), 0.8)  # recon -> GT
    recon = true.inverse().apply(p + rng.normal(scale=0.5, size=p.shape))
    lm = true.inverse().apply(v[lm_ids[:68]] + rng.normal(scale=1.0, size=(68, 3)))
    lm[3] = np.nan  # a landmark that was not reconstructed
    res, m = evaluate_reconstruction(recon, gt, lm, config=AlignConfig(backend=backend))
    E = res.transform @ true.inverse()
    assert E.rotation_angle_deg() < 0.05 and np.linalg.norm(E.t) < 0.1 and abs(E.s - 1) < 1e-3
    assert m.point_to_surface.mean == pytest.approx(0.5 * np.sqrt(2 / np.pi), abs=0.01)
    assert m.point_to_point.mean > m.point_to_surface.mean  # vertices are ~5 mm apart
    assert m.n_points == len(recon) and m.precision > 0.99


@pytest.mark.parametrize("backend", BACKENDS)
def test_closest_points_ignore_unused_vertices_and_index_original_faces(backend):
    """Vertices used by no triangle (an ICT-style mesh has many) must not bound distances,
    and triangle indices refer to the caller's face array."""
    v, f = ellipsoid_mesh(2)
    stray = np.array([[0.0, 0.0, 95.0], [0.0, 0.0, 0.0]])  # near a query, but on no triangle
    v2 = np.concatenate([stray, v])
    f2 = f + 2
    q = np.array([[0.0, 0.0, 96.0], [0.0, 0.0, 1.0]])
    pts, d, t = closest_points_on_mesh(q, v2, f2, backend=backend)
    _, d_ref, _ = closest_points_on_mesh(q, v, f, backend="numpy")
    assert np.allclose(d, d_ref, atol=1e-4) and d[0] > 5.0 and d[1] > 70.0
    tri = v2[f2[t]]  # the reported triangles contain the reported closest points
    on_tri = point_triangle_closest(pts, tri[:, 0], tri[:, 1], tri[:, 2])
    assert np.abs(on_tri - pts).max() < 1e-4


def test_sim3_gauge_refuses_collinear_cameras():
    gt = np.stack(
        [look_at(np.array([x, 0.0, 600.0]), np.array([x, 0.0, 0.0])) for x in (0, 10, 20)]
    )
    with pytest.raises(ValueError, match="first_frame"):
        pose_errors(gt, gt, "sim3")
    assert pose_errors(gt, gt, "first_frame_scaled").translation_mm.max() < 1e-9
