"""Pose covariance (the Cramér-Rao bound) of a BA solution, and the solver reaching it."""

import torch

from facesfm.geometry.se3 import rotation_angle, se3_log
from facesfm.solvers import BackwardMode, LMSolver, pose_covariance, rotation_std_deg
from facesfm.solvers.synthetic import make_face_problem, perturb_state


def test_covariance_matches_monte_carlo_on_a_small_face():
    """Solve 300 noisy copies of one small problem from the truth: the empirical covariance of
    each frame's rotation and translation twist matches the predicted one (1 px noise)."""
    torch.manual_seed(0)
    sf = make_face_problem(5, 30, seed=3, noise_px=0.0)
    truth = sf.truth
    cov = pose_covariance(sf.problem, truth, sigma_px=1.0)
    assert cov.shape == (5, 6, 6)
    assert float(cov[0].abs().max()) == 0.0  # the fixed frame
    solver = LMSolver(backward=BackwardMode.NONE)
    errs = []
    for _ in range(300):
        noisy = sf.problem.replace(uv=sf.problem.uv + torch.randn_like(sf.problem.uv))
        res = solver.solve(noisy, truth)
        errs.append(se3_log(res.state.poses @ torch.linalg.inv(truth.poses)))
    e = torch.stack(errs)  # (draws, F, 6) left twists (v, w)
    emp = torch.einsum("dfi,dfj->fij", e, e) / len(errs)
    for f in range(1, 5):
        for sl in (slice(0, 3), slice(3, 6)):  # translation, rotation
            pred = torch.diagonal(cov[f, sl, sl]).sum()
            got = torch.diagonal(emp[f, sl, sl]).sum()
            assert 0.8 < float(got / pred) < 1.25, (f, sl, float(got), float(pred))


def test_face_61x568_reaches_the_cramer_rao_bound():
    """The issue's "within 0.2 degree of the truth" at F=61, N=568 with 1 px noise asks for
    less error than the geometry allows: the bound on each frame's rotation is ~0.26 degree
    RMS, so no unbiased estimator meets it. What the solver must do instead is reach the bound:
    from the 3 deg / 1 cm / 5 mm start, over six noise seeds, its squared rotation errors sum
    to the bound's variance within the sampling spread of correlated frames."""
    from facesfm.eval.metrics import pose_errors

    ratios, bound, aligned = [], [], []
    for seed in range(6):
        sf = make_face_problem(61, 568, seed=seed)
        init = perturb_state(sf.truth, seed=seed + 1, rot_deg=3.0, trans_mm=10.0, point_mm=5.0)
        res = LMSolver(backward=BackwardMode.NONE).solve(sf.problem, init)
        assert res.converged
        err = rotation_angle(res.state.poses[:, :3, :3], sf.truth.poses[:, :3, :3])[1:]
        std = rotation_std_deg(pose_covariance(sf.problem, sf.truth))[1:]
        ratios.append(float((torch.rad2deg(err) ** 2).sum() / (std**2).sum()))
        bound.append(float((std**2).mean().sqrt()))
        aligned.append(float(pose_errors(res.state.poses.numpy(), sf.truth.poses.numpy(),
                                         "sim3").rotation_deg.mean()))
    assert min(bound) > 0.2  # the 0.2 degree criterion is below the bound
    mean_ratio = sum(ratios) / len(ratios)
    assert 0.6 < mean_ratio < 1.5, ratios
    # the errors above are in the solver's gauge (frame 0 fixed at the truth); after a
    # similarity alignment of the whole trajectory the mean error per seed is 0.16-0.22 deg
    # (measured; 0.18 over the six seeds)
    assert max(aligned) < 0.25 and sum(aligned) / len(aligned) < 0.2, aligned
