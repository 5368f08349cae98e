"""Stage functions on small exact inputs: depth sampling, back-projection and normals, masks,
perturbations, intrinsics, config building, and the learned stages' plumbing."""

import numpy as np
import pytest

from facesfm.errors import InputError
from facesfm.geometry.camera import intrinsics, look_at
from facesfm.geometry.multiview import hull_masks
from facesfm.solve.config import build_solve_config
from facesfm.solve.fusion import depth_to_points, fuse_depth_maps, sample_depth
from facesfm.solve.inputs import default_intrinsics, load_input, parse_intrinsics
from facesfm.solvers.initial_poses import perturbed_poses
from facesfm.solvers.landmark_ba import KernelKind


def test_sample_depth_is_bilinear_and_refuses_silhouettes():
    H, W = 6, 7
    r, c = np.mgrid[0:H, 0:W]
    depth = (300.0 + 2.0 * c + 3.0 * r)[None].astype(np.float32)  # exact under bilinear
    depth[0, 5, 6] = 0.0  # a background pixel
    uv = np.array([[[1.25, 2.5], [0.0, 0.0], [5.5, 4.5], [6.5, 1.0], [np.nan, 1.0],
                    [5.9, 0.3]]])
    z, ok = sample_depth(depth, uv)
    assert ok.tolist() == [[True, True, False, False, False, True]]
    np.testing.assert_allclose(z[0, [0, 1, 5]], [300 + 2.5 + 7.5, 300.0, 300 + 11.8 + 0.9],
                               rtol=1e-6)
    assert (z[~ok] == 0).all()


def test_depth_to_points_plane_normals():
    """A tilted plane: back-projected points satisfy its equation and every normal is the
    plane normal, facing the camera."""
    K = intrinsics(100.0, 40, 30)
    n = np.array([0.3, -0.2, -1.0])
    n /= np.linalg.norm(n)
    d0 = 400.0  # plane n.X = -d0 ... points with n.X + d0 = 0
    r, c = np.mgrid[0:30, 0:40]
    rays = np.stack([(c - K[0, 2]) / K[0, 0], (r - K[1, 2]) / K[1, 1], np.ones_like(c, float)],
                    -1)
    depth = d0 / -(rays @ n)  # z along the ray so that n.(z ray) = -d0
    X, N, _ = depth_to_points(depth, K)
    assert len(X) == 1200
    np.testing.assert_allclose(X @ n, -d0, rtol=1e-12)
    np.testing.assert_allclose(N, np.broadcast_to(n, N.shape), atol=1e-9)
    mask = np.zeros((30, 40), bool)
    mask[10:20, 5:15] = True
    X2, _, rc2 = depth_to_points(depth, K, mask, stride=2)
    assert len(X2) == 25 and (rc2 % 2 == 0).all()


def test_depth_to_points_does_not_depend_on_what_else_is_selected():
    """Points and normals of the masked pixels are those of the same pixels with the whole
    map selected (the work runs on the selection's bounding box: a normal at its edge still
    reads the neighbours outside it), holes and the frame's edges included; without normals
    the points are the same."""
    rng = np.random.default_rng(3)
    K = intrinsics(120.0, 60, 50)
    r, c = np.mgrid[0:50, 0:60]
    depth = 400 + 20 * np.sin(r / 6.0) * np.cos(c / 9.0)
    depth[rng.random(depth.shape) < 0.15] = 0  # holes
    X, N, rc = depth_to_points(depth, K)
    full = {tuple(p): (x, n) for p, x, n in zip(rc, X, N)}
    block = np.zeros((50, 60), bool)
    block[10:25, 20:35] = True  # its edge normals read unselected neighbours
    scattered = np.zeros((50, 60), bool)
    scattered[5:30, 8:40] = rng.random((25, 32)) < 0.3
    edge = np.zeros((50, 60), bool)
    edge[0:12, 45:60] = True  # at the frame's top and right edges
    for mask in (block, scattered, edge):
        Xm, Nm, rcm = depth_to_points(depth, K, mask)
        assert len(Xm) == int((mask & (depth > 0)).sum())
        for p, x, n in zip(rcm, Xm, Nm):
            np.testing.assert_array_equal(x, full[tuple(p)][0])
            np.testing.assert_array_equal(n, full[tuple(p)][1])
        Xo, No, rco = depth_to_points(depth, K, mask, normals=False)
        assert No is None
        np.testing.assert_array_equal(Xo, Xm)
        np.testing.assert_array_equal(rco, rcm)


def test_fusion_of_a_plane_seen_twice(tmp_path):
    """Two cameras 2 pixel footprints apart look at the plane z = 0 (world) from +z: fused
    points lie on it with normals towards the cameras, and points seen by both views merge
    in one voxel with the average colour (colours fused across views)."""
    from facesfm.solve.fusion import FusionConfig

    K = intrinsics(80.0, 32, 32)  # 3.75 mm per pixel at 300 mm
    poses = np.stack([look_at(np.array([x, 0.0, 300.0]), np.array([x, 0.0, 0.0]))
                      for x in (-3.75, 3.75)])
    depth = np.full((2, 32, 32), 300.0, np.float32)
    images = np.zeros((2, 32, 32, 3), np.uint8)
    images[0] = 100
    images[1] = 200
    cfg = FusionConfig(outlier_neighbors=0)
    cloud = fuse_depth_maps(images, depth, None, K, poses, cfg=cfg)
    np.testing.assert_allclose(cloud.points[:, 2], 0.0, atol=1e-9)
    np.testing.assert_allclose(cloud.normals[:, 2], 1.0, atol=1e-9)
    # 30 x 32 shared points (colour 150) + 2 x 2 x 32 seen once (100 or 200)
    assert len(cloud) == 30 * 32 + 128
    vals, counts = np.unique(np.round(cloud.colors[:, 0] * 255).astype(int), return_counts=True)
    assert vals.tolist() == [100, 150, 200] and counts.tolist() == [64, 960, 64]
    # a depth scale of 1.1 on the second view moves its points 30 mm behind the plane
    cloud = fuse_depth_maps(images, depth, None, K, poses, scale=np.array([1.0, 1.1]), cfg=cfg)
    assert sorted(set(np.round(cloud.points[:, 2], 6))) == [-30.0, 0.0]
    with pytest.raises(ValueError, match="scale"):
        fuse_depth_maps(images, depth, None, K, poses, scale=np.array([1.0, -1.0]))


def test_consistency_filter_keeps_what_other_views_confirm():
    """Five cameras 1 pixel footprint apart over the plane z = 0: every pixel whose point the
    neighbours see at their own depth is kept; a 4x4 patch of frame 2 pushed 5 mm off the plane
    is dropped (no other view agrees), and so are pixels no other view sees; a per-frame depth
    scale is applied before comparing."""
    from facesfm.solve.fusion import FusionConfig, consistent_masks

    K = intrinsics(80.0, 32, 32)  # 3.75 mm per pixel at 300 mm
    xs = 3.75 * np.arange(-2, 3)
    poses = np.stack([look_at(np.array([x, 0.0, 300.0]), np.array([x, 0.0, 0.0])) for x in xs])
    depth = np.full((5, 32, 32), 300.0, np.float32)
    mask = np.ones((5, 32, 32), bool)
    depth[2, 10:14, 10:14] = 305.0
    keep = consistent_masks(depth, mask, K, poses, views=2, window=2, tol_mm=1.0)
    assert not keep[2, 10:14, 10:14].any()
    assert keep[2, 20:24, 10:14].all() and keep[2, :, 2:30].sum() == 32 * 28 - 16
    # frame 0 (camera 2 px to the left of frame 2): its two left columns are seen by one
    # neighbour at most, and its view of the corrupted patch (columns 12:16) gets one vote
    assert not keep[0, :, :2].any() and not keep[0, 10:14, 12:16].any()
    assert keep[0, :10, 2:].all() and keep[0, 14:, 2:].all()
    # the patch costs frame 3's view of it (columns 9:13) one of its three votes
    keep3 = consistent_masks(depth, mask, K, poses, views=3, window=2, tol_mm=1.0)
    assert not keep3[3, 10:14, 9:13].any() and keep3[3, 20:24, 9:13].all()
    assert not keep3[0].any()  # two neighbours only
    # scaled depth: frame 4 at scale 1.1 no longer agrees with anyone
    scaled = consistent_masks(depth, mask, K, poses, np.array([1, 1, 1, 1, 1.1]), views=1,
                              window=2, tol_mm=1.0)
    assert not scaled[4].any() and scaled[3, 20:24, 10:14].all()
    with pytest.raises(InputError, match="consistent_views"):
        FusionConfig(consistent_views=20, consistency_window=8)


def test_hull_masks():
    uv = np.array([[[10.0, 5.0], [30.0, 5.0], [30.0, 25.0], [10.0, 25.0], [0.0, 0.0]]])
    w = np.array([[1.0, 1.0, 1.0, 1.0, 0.0]])
    m = hull_masks(uv, w, 32, 40)
    assert m.shape == (1, 32, 40)
    # the closed square [10, 30] x [5, 25]: 21 x 21 pixel centres, its edges included
    expect = np.zeros((32, 40), dtype=bool)
    expect[5:26, 10:31] = True
    np.testing.assert_array_equal(m[0], expect)
    assert not hull_masks(uv, np.zeros_like(w), 32, 40).any()
    # a triangle reaching outside the image, against a brute-force test of every pixel
    tri = np.array([[[-8.0, 3.3], [35.5, 12.7], [6.2, 40.0]]])
    m = hull_masks(tri, np.ones((1, 3)), 32, 40)[0]
    vv, uu = np.mgrid[0:32, 0:40].astype(float)
    a, b, c = tri[0]

    def side(p, q):
        return (q[0] - p[0]) * (vv - p[1]) - (q[1] - p[1]) * (uu - p[0])

    s1, s2, s3 = side(a, b), side(b, c), side(c, a)
    inside = ((s1 >= 0) & (s2 >= 0) & (s3 >= 0)) | ((s1 <= 0) & (s2 <= 0) & (s3 <= 0))
    np.testing.assert_array_equal(m, inside)
    assert 200 < m.sum() < 32 * 40


def test_perturbed_poses_exact_magnitudes():
    from facesfm.eval.metrics import rotation_angle_deg

    P = np.stack([look_at(np.array([500 * np.sin(a), 0, 500 * np.cos(a)]), np.zeros(3))
                  for a in np.linspace(-1, 1, 5)])
    Q = perturbed_poses(P, 3.0, 10.0, seed=4)
    np.testing.assert_array_equal(Q[0], P[0])
    dR = np.swapaxes(P[1:, :3, :3], 1, 2) @ Q[1:, :3, :3]
    np.testing.assert_allclose(rotation_angle_deg(dR), 3.0, atol=1e-9)
    np.testing.assert_array_equal(perturbed_poses(P, 3.0, 10.0, seed=4), Q)


def test_intrinsics_options():
    np.testing.assert_allclose(default_intrinsics(640, 480),
                               [[768.0, 0, 319.5], [0, 768.0, 239.5], [0, 0, 1]])
    np.testing.assert_allclose(parse_intrinsics("500", 100, 80)[:2],
                               [[500, 0, 49.5], [0, 500, 39.5]])
    np.testing.assert_allclose(parse_intrinsics("500,50,40", 100, 80)[:2, 2], [50, 40])
    K = parse_intrinsics("500, 510, 50, 40", 100, 80)
    assert (K[0, 0], K[1, 1]) == (500.0, 510.0)
    for bad in ("", "a,b", "1,2", "0,1,1", "-5"):
        with pytest.raises(InputError, match="--intrinsics"):
            parse_intrinsics(bad, 100, 80)


def _photo(path, focal_35mm=None, orientation=None, size=(60, 40)):
    """A JPEG with a white square in its stored top-left corner and the given EXIF tags."""
    from PIL import ExifTags, Image

    a = np.zeros((size[1], size[0], 3), np.uint8)
    a[:10, :10] = 255
    ex = Image.Exif()
    if orientation is not None:
        ex[ExifTags.Base.Orientation] = orientation
    if focal_35mm is not None:
        ex.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.FocalLengthIn35mmFilm] = focal_35mm
    Image.fromarray(a).save(path, exif=ex)


def test_exif_focal_length_gives_k(tmp_path):
    for i in range(3):  # the third photo without EXIF: the others speak for the camera
        _photo(tmp_path / f"p{i}.jpg", focal_35mm=26 if i < 2 else None)
    fr = load_input(tmp_path)
    assert fr.K_source == "exif"
    f = 26 * np.hypot(60, 40) / np.hypot(36, 24)  # the diagonal's share of a 36x24 frame
    np.testing.assert_allclose(fr.K, [[f, 0, 29.5], [0, f, 19.5], [0, 0, 1]])
    np.testing.assert_allclose(load_input(tmp_path, focal=300.0).K[0, 0], 300.0)  # option wins


def test_photos_of_two_zoom_settings_are_refused(tmp_path):
    _photo(tmp_path / "a.jpg", focal_35mm=26)
    _photo(tmp_path / "b.jpg", focal_35mm=52)
    with pytest.raises(InputError, match=r"different focal lengths \(a.jpg: 26 mm, b.jpg: 52"):
        load_input(tmp_path)
    assert load_input(tmp_path, focal=500.0).K_source == "option"


def test_photos_without_exif_get_the_guess(tmp_path):
    for i in range(2):
        _photo(tmp_path / f"p{i}.jpg")
    fr = load_input(tmp_path)
    assert fr.K_source == "default" and fr.K[0, 0] == pytest.approx(1.2 * 60)


def test_the_principal_point_is_given_only_by_intrinsics_or_a_sequence(tmp_path, seq9):
    """A photo folder's K (the guess, EXIF or ``--focal``) takes the principal point at the
    frame's centre; ``--intrinsics`` and a sequence's K give it. The report says which."""
    for i in range(2):
        _photo(tmp_path / f"p{i}.jpg", focal_35mm=26)
    assert not load_input(tmp_path).principal_point_given  # EXIF
    assert not load_input(tmp_path, focal=300.0).principal_point_given
    given = load_input(tmp_path, intrinsics="300,20,15")
    assert given.principal_point_given and np.allclose(given.K[:2, 2], [20, 15])
    assert load_input(seq9).principal_point_given
    assert not load_input(seq9, focal=300.0).principal_point_given


def test_exif_orientation_turns_photos_upright(tmp_path):
    for i in range(2):  # 6: stored turned 90 degrees anticlockwise; shown turned clockwise
        _photo(tmp_path / f"p{i}.jpg", orientation=6)
    fr = load_input(tmp_path)
    assert fr.images.shape[1:3] == (60, 40)  # H, W of the upright photo
    corner = fr.images[0, :10, -10:].mean()  # the stored top-left is now top-right
    assert corner > 200 and fr.images[0, :10, :10].mean() < 50


def test_build_solve_config(tmp_path):
    cfg = build_solve_config(None, oracle_landmarks=True, oracle_depth=True, oracle_poses=True,
                             ba=False, mesh_method="poisson", perturb="2,5", seed=3)
    assert cfg.poses_init == "gt" and not cfg.ba.enabled
    assert cfg.fusion.mesh_method == "poisson"
    assert (cfg.perturb_rot_deg, cfg.perturb_trans_mm, cfg.perturb_seed) == (2.0, 5.0, 3)
    y = tmp_path / "solve.yaml"
    y.write_text("landmarks: 68\nba: {kernel: cauchy}\nfusion: {voxel_mm: 2.0}\n")
    cfg = build_solve_config(y, poses_init="gt-perturbed")
    assert (cfg.landmarks, cfg.ba.kernel, cfg.fusion.voxel_mm) == (68, KernelKind.CAUCHY, 2.0)
    y.write_text("ba: {float64: false}\n")  # the training layer's setting, not the solve's
    with pytest.raises(InputError, match="ba.float64"):
        build_solve_config(y)
    assert cfg.poses_init == "gt-perturbed" and cfg.ba.enabled
    y.write_text("fusion: {voxels: 2.0}\n")
    with pytest.raises(InputError, match="voxels"):
        build_solve_config(y)


def test_landmark_source_options(tmp_path):
    """--oracle-landmarks is --landmarks-from oracle; the two disagreeing are refused; an
    option replaces the YAML file's source, and the file's own choice stands otherwise."""
    assert build_solve_config().landmarks_from == "detector"
    cfg = build_solve_config(None, oracle_landmarks=True)
    assert cfg.landmarks_from == "oracle" and cfg.oracle_landmarks
    cfg = build_solve_config(None, landmarks_from="oracle")
    assert cfg.landmarks_from == "oracle" and cfg.oracle_landmarks
    with pytest.raises(InputError, match="disagree"):
        build_solve_config(None, oracle_landmarks=True, landmarks_from="mediapipe")
    with pytest.raises(InputError, match="--landmarks N"):
        build_solve_config(None, landmarks_from="mediapipe", landmarks=68)
    y = tmp_path / "solve.yaml"
    y.write_text("oracle_landmarks: true\n")
    assert build_solve_config(y).landmarks_from == "oracle"
    cfg = build_solve_config(y, landmarks_from="mediapipe")
    assert cfg.landmarks_from == "mediapipe" and not cfg.oracle_landmarks


def test_learned_stages_plumbing(tmp_path, seq9):
    """Untrained tiny networks saved as training checkpoints: load, run, shapes and frames."""
    import torch

    from facesfm.config import to_dict
    from facesfm.data.format import load_sequence
    from facesfm.training import TrainState, preset_config, save_checkpoint
    from facesfm.training.inference import (
        load_networks,
        recorded_detector,
        run_depth,
        run_landmarks,
        run_poses,
    )
    from facesfm.training.landmarks import build_landmark_net
    from facesfm.training.sfm import build_sfm_nets

    torch.manual_seed(0)
    cfg = preset_config("tiny")
    lm_ck, sfm_ck = tmp_path / "lm.pt", tmp_path / "sfm.pt"
    save_checkpoint(lm_ck, models={"model": build_landmark_net(cfg)}, optimizer=None,
                    state=TrainState(), config=to_dict(cfg), stage="landmarks")
    sfm = build_sfm_nets(cfg)
    save_checkpoint(sfm_ck, models={"model": sfm}, optimizer=None, state=TrainState(),
                    config=to_dict(cfg), stage="sfm", extra={"landmarks_ckpt": str(lm_ck)})
    assert recorded_detector(sfm_ck) == lm_ck  # what `facesfm train sfm` records
    nets = load_networks(sfm_ck, lm_ck)
    assert nets.sfm_size == (64, 64) and nets.landmark_size == (64, 64)
    seq = load_sequence(seq9)
    images = np.stack([seq.image(i) for i in range(4)])
    uv, w = run_landmarks(nets, images)
    assert uv.shape == (4, 68, 2) and w.shape == (4, 68) and (w >= 0).all()
    d = run_depth(nets, images)
    assert d.shape == (4, 160, 160) and d.dtype == np.float32
    assert ((d >= cfg.sfm.min_depth_mm) & (d <= cfg.sfm.max_depth_mm)).all()
    T = run_poses(nets, images)
    assert T.shape == (4, 4, 4)
    np.testing.assert_array_equal(T[0], np.eye(4))
    # chaining: frame 2 = rel(1 -> 2) @ frame 1, as the training code composes them
    x = torch.nn.functional.interpolate(
        torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255, size=(64, 64),
        mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        rel = sfm.pose(x[1:2], x[2:3]).src_T_tgt[0].double().numpy()
    np.testing.assert_allclose(T[2], rel @ T[1], atol=1e-5)
    # at a step of 2 (the network trained on pairs 2 frames apart): keyframes 0, 2 chained,
    # frames 1 and 3 placed from the keyframe before them
    T2 = run_poses(nets, images, step=2)
    def m(a, b):
        with torch.no_grad():
            return sfm.pose(x[a:a + 1], x[b:b + 1]).src_T_tgt[0].double().numpy()

    np.testing.assert_array_equal(T2[0], np.eye(4))
    np.testing.assert_allclose(T2[2], m(0, 2), atol=1e-5)
    np.testing.assert_allclose(T2[1], m(0, 1), atol=1e-5)
    np.testing.assert_allclose(T2[3], m(2, 3) @ T2[2], atol=1e-5)
    assert nets.pose_step == cfg.data.frame_step


def test_poisson_and_tsdf_meshes_of_gt_depth(seq9):
    """GT depth + GT poses, no alignment needed (world frame): the Poisson mesh lies within
    0.05 mm of the GT surface on average (measured 0.017), the TSDF mesh within 0.25 (0.17:
    its 1 mm voxels); both carry the fused skin colours."""
    import trimesh

    from facesfm.data.format import load_sequence
    from facesfm.eval.metrics import point_to_surface_distances
    from facesfm.solve.fusion import FusionConfig, mesh_from_depth

    s = load_sequence(seq9)
    im = np.stack([s.image(i) for i in range(len(s))])
    d = np.stack([s.depth(i) for i in range(len(s))])
    m = np.stack([s.mask(i) for i in range(len(s))])
    gt = trimesh.load(seq9 / "mesh.ply", process=False)
    cloud = fuse_depth_maps(im, d, m, s.K, s.cam_T_world)
    dc = point_to_surface_distances(cloud.points, gt.vertices, gt.faces)
    assert dc.mean() < 0.005
    for method, bound in (("poisson", 0.05), ("tsdf", 0.25)):
        mesh = mesh_from_depth(im, d, m, s.K, s.cam_T_world, cloud=cloud,
                               cfg=FusionConfig(mesh_method=method))
        dm = point_to_surface_distances(mesh.vertices, gt.vertices, gt.faces)
        assert dm.mean() < bound, method
        assert len(mesh.faces) > 20000
        c = mesh.colors.mean(0)
        assert c[0] > c[1] > c[2] > 0.2, method


def test_tsdf_mesh_is_the_same_with_frames_that_hold_no_depth(seq9):
    """A frame with no masked depth (one the plane sweep did not refine) is left out of the
    TSDF; it would not have changed a voxel, so the mesh is the same to the bit (its vertices
    in another order: the sparse grid numbers its blocks as frames allocate them). A frame
    whose depth lies only outside the mask holds none either; one with depth inside does
    count."""
    from facesfm.data.format import load_sequence
    from facesfm.solve.fusion import FusionConfig, mesh_from_depth

    s = load_sequence(seq9)
    im = np.stack([s.image(i) for i in range(len(s))])
    d = np.stack([s.depth(i) for i in range(len(s))])
    m = np.stack([s.mask(i) for i in range(len(s))])
    cfg = FusionConfig(mesh_method="tsdf")
    cloud = fuse_depth_maps(im, d, m, s.K, s.cam_T_world)
    ref = mesh_from_depth(im, d, m, s.K, s.cam_T_world, cloud=cloud, cfg=cfg)
    d2, m2 = d.copy(), m.copy()
    d2[3] = 0.0  # no depth at all
    m2[5] = False  # depth, but none inside the mask
    gap = mesh_from_depth(im, d2, m2, s.K, s.cam_T_world, cloud=cloud, cfg=cfg)
    keep = np.ones(len(s), bool)
    keep[[3, 5]] = False
    fewer = mesh_from_depth(im[keep], d[keep], m[keep], s.K, s.cam_T_world[keep], cloud=cloud,
                            cfg=cfg)

    def rows(mesh):  # vertices with their colours, in one order
        a = np.hstack([mesh.vertices, mesh.colors])
        return a[np.lexsort(a.T[::-1])]

    def triangles(mesh):  # each triangle by its corners' coordinates, in one order
        t = mesh.vertices[mesh.faces]  # (T, 3, 3)
        t = np.take_along_axis(t, np.lexsort(t.transpose(2, 0, 1)[::-1])[..., None], 1)
        t = t.reshape(len(t), 9)
        return t[np.lexsort(t.T[::-1])]

    np.testing.assert_array_equal(rows(gap), rows(fewer))
    np.testing.assert_array_equal(triangles(gap), triangles(fewer))
    assert not np.array_equal(rows(fewer), rows(ref))


def test_tsdf_grid_grows_past_its_initial_blocks(seq9):
    """Fine voxels need far more 8^3 blocks than the grid reserves at first (2048): its hash
    map grows, and the mesh still lies on the surface the exact depth describes (measured:
    2,881 blocks hold a vertex, median 0.16 mm off at 2.3 mm per pixel)."""
    import open3d as o3d

    from facesfm.data.format import load_sequence
    from facesfm.eval.metrics import point_to_surface_distances
    from facesfm.solve.fusion import FusionConfig, mesh_from_depth

    s = load_sequence(seq9)
    im = np.stack([s.image(i) for i in range(len(s))])
    d = np.stack([s.depth(i) for i in range(len(s))])
    m = np.stack([s.mask(i) for i in range(len(s))])
    cfg = FusionConfig(tsdf_voxel_mm=0.25, tsdf_trunc_mm=1.0)
    mesh = mesh_from_depth(im, d, m, s.K, s.cam_T_world, cfg=cfg)
    blocks = np.unique(np.floor(mesh.vertices / (8 * 0.25)).astype(np.int64), axis=0)
    assert len(blocks) > 2048
    gt = o3d.io.read_triangle_mesh(str(seq9 / "mesh.ply"))
    dist = point_to_surface_distances(mesh.vertices, np.asarray(gt.vertices),
                                      np.asarray(gt.triangles))
    assert np.median(dist) < 0.2


def test_a_start_the_bundle_adjustment_cannot_take_is_no_start(monkeypatch):
    """A degenerate factorisation (every camera in one place: nothing triangulates) used to
    raise out of the solve with a traceback. The BA then runs from the mean face's start;
    when no start works the solve stops with one line naming the start."""
    from types import SimpleNamespace

    from facesfm.eval.metrics import pose_errors
    from facesfm.geometry.camera import project, transform
    from facesfm.solve import stages
    from facesfm.solve.config import SolveConfig
    from facesfm.solvers.baselines import template_landmarks
    from facesfm.solvers.landmark_ba import Landmarks

    X = template_landmarks(68)
    centre = X.mean(0)
    K = intrinsics(500.0, 384, 384)
    truth = np.stack([look_at(centre + 500.0 * np.array([np.sin(a), 0.0, np.cos(a)]), centre)
                      for a in np.radians(np.linspace(-40, 40, 9))])
    uv = np.stack([project(K, transform(T, X)) for T in truth])
    lm = Landmarks(uv, np.ones(uv.shape[:2]), np.arange(68), "network")
    cfg = SolveConfig(poses_init="landmarks", depth="landmarks")
    used = SimpleNamespace(K=K)
    degenerate = np.repeat(truth[4:5], 9, 0)
    ba, start, classical = stages.adjust(used, lm, None, degenerate, cfg)
    assert ba.start == "template" and classical and not np.allclose(start, degenerate)
    assert pose_errors(ba.poses, truth, "sim3").rotation_deg.max() < 0.1
    monkeypatch.setattr(stages, "template_poses", lambda K, lm: degenerate.copy())
    with pytest.raises(InputError) as e:
        stages.adjust(used, lm, None, degenerate, cfg)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("the bundle adjustment could not start from the "
                                              "factorisation: ")


def test_a_panned_capture_shows_the_render_where_its_cameras_project_it(seq9, tmp_path):
    """panned_capture's images and its true cameras agree: a surface point lifted from a
    render's depth and projected with the capture's camera lands on the render's colour
    there; the render's own camera would put it elsewhere."""
    from PIL import Image

    from facesfm.data.format import load_sequence
    from facesfm.geometry.camera import project, transform
    from facesfm.render.composite import panned_capture

    seq = load_sequence(seq9)
    cap = panned_capture(seq9, tmp_path / "pan", 400, 240, np.linspace(-15, 15, len(seq)),
                         np.linspace(5, -5, len(seq)))
    Kr = np.asarray(seq.K)
    for i in (0, 4, 8):
        img = seq.image(i).astype(np.float64)
        depth = seq.depth(i)
        r, c = np.nonzero(depth > 0)
        pick = np.linspace(0, len(r) - 1, 200).round().astype(int)
        r, c = r[pick], c[pick]
        Xc = depth[r, c][:, None] * (np.stack([c, r, np.ones_like(c)], 1) @ np.linalg.inv(Kr).T)
        Xw = transform(np.linalg.inv(np.asarray(seq.cam_T_world[i])), Xc)
        out = np.asarray(Image.open(cap.path / cap.names[i])).astype(np.float64)
        uv = np.rint(project(cap.K, transform(cap.cam_T_world[i], Xw))).astype(int)
        assert ((uv >= 0) & (uv < [400, 240])).all()
        err = np.abs(out[uv[:, 1], uv[:, 0]] - img[r, c]).mean()
        assert err < 3.0, (i, err)
        if i != 4:  # the render's camera unturned would read other pixels
            uv0 = np.rint(project(cap.K, transform(np.asarray(seq.cam_T_world[i]), Xw)))
            assert np.abs(uv0 - uv).max() > 20
