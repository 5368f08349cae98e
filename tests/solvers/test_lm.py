"""Our Schur LM: reaches the scipy float64 optimum; gradients of every backward mode match
finite differences; accuracy on the F=61, N=568 face problem; degenerate input raises."""

import math

import pytest
import torch

from facesfm.errors import FacesfmError, InputError
from facesfm.geometry.se3 import rotation_angle
from facesfm.solvers import (
    BackwardMode,
    BAState,
    CauchyKernel,
    HuberKernel,
    LMSolver,
    Parameterization,
    ScipyReference,
    SolverError,
    Window,
    linearize,
    solve,
)
from facesfm.solvers.synthetic import make_face_problem, perturb_state

DEPTH = {"parameterization": Parameterization.DEPTH, "depth_noise": 0.01, "depth_scale_spread": 0.05}
CASES = {
    "classical": {},
    # delta chosen so that no residual sits within 0.1 px of the kink at the optimum: there the
    # optimum is not differentiable and finite differences straddle two regimes
    "classical-huber": {"kernel": HuberKernel(1.5)},
    "classical-cauchy": {"kernel": CauchyKernel(3.0)},
    "depth-window": dict(pairs=Window(2), **DEPTH),
    "depth-nocorr-huber": dict(pairs=Window(3), depth_corrections=False, kernel=HuberKernel(1.5), **DEPTH),
}


def _deg(a, b):
    return torch.rad2deg(rotation_angle(a.poses[:, :3, :3], b.poses[:, :3, :3]))


def _setup(name, F=10, N=40, seed=0):
    sf = make_face_problem(F, N, seed=seed, **CASES[name])
    init = perturb_state(sf.truth, seed=seed + 1, log_scale=0.05 if name.startswith("depth") else 0.0)
    return sf, init


@pytest.mark.parametrize("name", list(CASES))
def test_reaches_the_scipy_reference_optimum(name):
    sf, init = _setup(name)
    ours = solve(sf.problem, init, LMSolver(backward=BackwardMode.NONE))
    ref = solve(sf.problem, init, ScipyReference())
    assert ours.converged and ref.converged
    assert abs(ours.final_cost - ref.final_cost) <= 1e-6 * ref.final_cost
    assert float(_deg(ours.state, ref.state).max()) < 0.01
    assert ours.cost[0] > 10 * ours.final_cost  # it really moved from the perturbed start
    assert ours.cost.shape == (ours.iterations + 1,)
    assert bool((ours.cost[1:] <= ours.cost[:-1]).all())  # LM only accepts decreasing steps
    assert ours.iterations > 0 and ours.timings["solve"] > 0
    assert math.isfinite(ours.rms_px) and 0.5 < ours.rms_px < 4.0


def _loss(state, classical, A, B):
    R = state.poses[:, :3, :3]
    if classical:
        # gauge-invariant (the classical scale is a gauge): rotations and normalised centres
        C = -(R.transpose(1, 2) @ state.poses[:, :3, 3:])[..., 0]
        D = (C - C[0]) / (C[-1] - C[0]).norm()
    else:
        D = state.poses[:, :3, 3] / 100.0
    return (A * R).sum() + (B * D).sum()


GRAD_CASES = [
    ("classical", BackwardMode.IMPLICIT),
    ("classical", BackwardMode.TRUNCATED),
    ("classical", BackwardMode.UNROLL),
    ("classical-huber", BackwardMode.IMPLICIT),
    ("depth-window", BackwardMode.IMPLICIT),
    ("depth-window", BackwardMode.TRUNCATED),
    ("depth-window", BackwardMode.UNROLL),
]


@pytest.mark.parametrize("name,mode", GRAD_CASES)
def test_gradient_wrt_uv_and_depth_matches_finite_differences(name, mode):
    sf = make_face_problem(5, 20, seed=0, **CASES[name])
    p = sf.problem
    init = perturb_state(sf.truth, seed=1, rot_deg=1.0, trans_mm=3.0, point_mm=2.0)
    classical = p.parameterization is Parameterization.CLASSICAL
    g = torch.Generator().manual_seed(5)
    A = torch.randn(5, 3, 3, generator=g, dtype=torch.float64)
    B = torch.randn(5, 3, generator=g, dtype=torch.float64)
    seen = (p.weight > 0).to(torch.float64)
    duv = torch.randn(p.uv.shape, generator=g, dtype=torch.float64) * seen[..., None]
    dd = None if classical else torch.randn(p.depth.shape, generator=g, dtype=torch.float64) * seen
    tight = LMSolver(backward=BackwardMode.NONE, ftol=1e-16, xtol=1e-13, gtol=1e-13, max_iterations=200)

    def loss_at(h):
        q = p.replace(uv=p.uv + h * duv, depth=None if dd is None else p.depth + h * dd)
        return float(_loss(tight.solve(q, init).state, classical, A, B))

    h = 1e-3
    fd = (loss_at(h) - loss_at(-h)) / (2 * h)
    uv = p.uv.clone().requires_grad_()
    depth = None if classical else p.depth.clone().requires_grad_()
    res = LMSolver(backward=mode, ftol=1e-14).solve(p.replace(uv=uv, depth=depth), init)
    if isinstance(p.kernel, HuberKernel):
        lin = linearize(p, res.state.detach(), jacobians=False)
        norms = lin.r.detach().norm(dim=-1)[lin.valid]
        assert float((norms - p.kernel.delta).abs().min()) > 0.05  # the test is well posed
        assert int((norms > p.kernel.delta).sum()) > 0  # and the kernel is active
    _loss(res.state, classical, A, B).backward()
    an = float((uv.grad * duv).sum())
    if depth is not None:
        assert depth.grad.abs().sum() > 0
        an += float((depth.grad * dd).sum())
    assert abs(fd) > 1e-3
    assert abs(an - fd) < 1e-3 * abs(fd), (an, fd)


def test_gauss_newton_implicit_gradient_is_exact_for_zero_residuals():
    sf = make_face_problem(5, 20, seed=2, noise_px=0.0)
    p = sf.problem
    init = perturb_state(sf.truth, seed=3, rot_deg=1.0, trans_mm=3.0, point_mm=2.0)
    grads = {}
    for mode in (BackwardMode.IMPLICIT, BackwardMode.IMPLICIT_GN):
        uv = p.uv.clone().requires_grad_()
        res = LMSolver(backward=mode).solve(p.replace(uv=uv), init)
        (g,) = torch.autograd.grad(res.poses[:, :3, :3].sum(), uv)
        grads[mode] = g
    a, b = grads[BackwardMode.IMPLICIT], grads[BackwardMode.IMPLICIT_GN]
    assert float(a.norm()) > 1e-3
    assert float((a - b).norm() / a.norm()) < 1e-6


def test_unroll_gradient_reaches_the_initial_poses():
    sf, init = _setup("classical", F=5, N=20)
    poses0 = init.poses.clone().requires_grad_()
    res = LMSolver(backward=BackwardMode.UNROLL, max_iterations=2).solve(
        sf.problem, BAState(poses0, init.points)
    )
    (g,) = torch.autograd.grad(res.poses[:, :3, :3].sum(), poses0)
    assert torch.isfinite(g).all() and float(g[1:].abs().max()) > 0


def test_face_61x568_from_a_perturbed_start():
    """3 deg / 1 cm / 5 mm perturbation, 1 px noise. The optimum is reached from the perturbed
    start (same as from the truth to 0.001 deg); its own error against the truth is bounded by
    the geometry (Cramer-Rao std of each frame's rotation at this geometry: ~0.26 deg)."""
    sf = make_face_problem(61, 568, seed=0)
    init = perturb_state(sf.truth, seed=1, rot_deg=3.0, trans_mm=10.0, point_mm=5.0)
    solver = LMSolver(backward=BackwardMode.NONE)
    res = solver.solve(sf.problem, init)
    from_truth = solver.solve(sf.problem, sf.truth)
    assert res.converged and res.iterations <= 12
    assert float(_deg(res.state, from_truth.state).max()) < 1e-3
    err = _deg(res.state, sf.truth)
    assert float(err.mean()) < 0.3 and float(err.max()) < 0.6
    assert abs(res.rms_px - math.sqrt(2.0)) < 0.05  # 1 px per axis noise, ~2N dof removed


def test_depth_parameterisation_recovers_scales_and_poses_without_noise():
    sf = make_face_problem(12, 60, seed=4, noise_px=0.0, depth_scale_spread=0.1,
                           parameterization=Parameterization.DEPTH, pairs=Window(2))
    init = perturb_state(sf.truth, seed=5, rot_deg=3.0, trans_mm=10.0, log_scale=0.05)
    res = solve(sf.problem, init, LMSolver(backward=BackwardMode.NONE))
    assert float(_deg(res.state, sf.truth).max()) < 1e-6
    assert float((res.state.log_scale - sf.truth.log_scale).abs().max()) < 1e-8
    assert float(res.state.depth_correction.abs().max()) < 1e-8


# ------------------------------------------------------------------------- degenerate input


def _small(**kw):
    sf = make_face_problem(4, 15, seed=0, **kw)
    return sf, perturb_state(sf.truth, seed=1)


def test_one_frame_raises():
    sf, init = _small()
    p = sf.problem
    one = p.replace(K=p.K[:1], uv=p.uv[:1], weight=p.weight[:1])
    with pytest.raises(SolverError, match="at least 2 frames"):
        LMSolver().solve(one, BAState(init.poses[:1], init.points))


def test_no_covisible_landmarks_raises():
    sf, init = _small(**DEPTH)
    p = sf.problem
    w = torch.zeros_like(p.weight)
    w[0, :7] = 1.0
    w[1:, 7:] = 1.0  # frame 0 shares nothing with the others
    w[2:, 7:] = 0.0
    with pytest.raises(SolverError, match="frame"):
        LMSolver().solve(p.replace(weight=w, pairs=Window(1)), init)
    sfc, initc = _small()
    w = torch.eye(4, 15, dtype=torch.float64)  # every landmark seen at most once
    with pytest.raises(SolverError, match="fewer than 2 frames"):
        LMSolver().solve(sfc.problem.replace(weight=w), initc)


def test_nan_observation_with_weight_raises_naming_it():
    sf, init = _small()
    uv = sf.problem.uv.clone()
    uv[2, 5, 1] = float("nan")
    with pytest.raises(InputError, match="frame 2, landmark 5"):
        LMSolver().solve(sf.problem.replace(uv=uv), init)
    # the same NaN with zero weight is simply ignored
    w = sf.problem.weight.clone()
    w[2, 5] = 0.0
    res = LMSolver(backward=BackwardMode.NONE).solve(sf.problem.replace(uv=uv, weight=w), init)
    assert torch.isfinite(res.poses).all() and res.converged


def test_all_weights_zero_raises():
    sf, init = _small()
    with pytest.raises(SolverError, match="weight is zero"):
        LMSolver().solve(sf.problem.replace(weight=torch.zeros_like(sf.problem.weight)), init)


def test_rank_deficient_gauge_raises_instead_of_nan():
    sf, init = _small()
    K = sf.problem.K.clone()
    K[2, 0, 0] = 0.0
    K[2, 1, 1] = 0.0  # frame 2 projects everything to one pixel: its pose is unconstrained
    with pytest.raises(SolverError, match="singular"):
        LMSolver().solve(sf.problem.replace(K=K), init)
    sfd, initd = _small(**DEPTH)
    w = sfd.problem.weight.clone()
    w[0] = 0.0  # the frame holding the gauge (pose and depth scale) sees nothing
    with pytest.raises(SolverError, match="frame 0"):
        LMSolver().solve(sfd.problem.replace(weight=w), initd)


def test_points_behind_the_camera_raise():
    sf, init = _small()
    pts = init.points.clone()
    pts[:, 2] += 1000.0  # behind every camera near the +z axis
    with pytest.raises(FacesfmError, match="behind a camera"):
        LMSolver().solve(sf.problem, BAState(init.poses, pts))


def test_schur_products_skip_blocks_no_point_couples_and_sum_the_same():
    """Band points (seen by at most SCHUR_BAND consecutive frames, up to the last frame) and
    wide ones (landmarks, seen across the sequence), against the one dense product; and the
    same gradient to what W and Y are made of (an unseen observation's W is zero whatever
    its inputs, so nothing flows through it on either path)."""
    from facesfm.solvers.schur import SCHUR_BAND, SCHUR_BAND_MIN_FRAMES, schur_products

    torch.manual_seed(0)
    F, C, S = SCHUR_BAND_MIN_FRAMES + 6, 6, 3  # long enough for the banded path
    spans = [(0, F), (3, F - 10), (0, 1), (5, 9), (F - 10, F), (F - 1, F),
             (10, 10 + SCHUR_BAND), (10, 11 + SCHUR_BAND), (12, 20)]
    N = len(spans) + 1  # the last: never seen
    seen = torch.zeros(F, N, 1, 1, dtype=torch.float64)
    for n, (a, b) in enumerate(spans):
        seen[a:b, n] = 1.0
    seen[7, 1] = 0.0  # a frame inside a span that does not see the point
    A = torch.randn(F, N, C, S, dtype=torch.float64, requires_grad=True)
    M = torch.randn(1, N, S, S, dtype=torch.float64, requires_grad=True)

    def both():
        W = A * seen
        Y = W @ M
        dense = Y.permute(0, 2, 1, 3).reshape(F * C, N * S) @ \
            W.permute(0, 2, 1, 3).reshape(F * C, N * S).T
        return schur_products(Y, W), dense

    out, ref = both()
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-12)
    g = torch.autograd.grad(out.square().sum(), (A, M))
    g_ref = torch.autograd.grad(both()[1].square().sum(), (A, M))
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9)


def test_short_sequence_structure_product_from_its_lower_triangle():
    """Below SCHUR_BAND_MIN_FRAMES the structure product W V^-1 W^T is assembled from the
    block rows of its lower triangle and mirrored: it is symmetric, so values and gradients
    (through W and the symmetric V^-1) match the one dense product."""
    from facesfm.solvers.schur import SCHUR_BAND_MIN_FRAMES, schur_products

    torch.manual_seed(1)
    F, N, C, S = SCHUR_BAND_MIN_FRAMES - 3, 40, 6, 3
    A = torch.randn(F, N, C, S, dtype=torch.float64, requires_grad=True)
    P = torch.randn(N, S, S, dtype=torch.float64, requires_grad=True)

    def both():
        M = P + P.transpose(1, 2)
        Y = A @ M[None]
        dense = Y.permute(0, 2, 1, 3).reshape(F * C, N * S) @ \
            A.permute(0, 2, 1, 3).reshape(F * C, N * S).T
        return schur_products(Y, A), dense

    out, ref = both()
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-11)
    assert torch.equal(out, out.T)
    g = torch.autograd.grad(out.square().sum(), (A, P))
    g_ref = torch.autograd.grad(both()[1].square().sum(), (A, P))
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-8)


def test_classical_normal_equations_hand_w_to_the_factor_without_a_copy():
    """normal_equations stores W in the (F, C, N, S) layout of the reduced camera system, so
    the factor's (F*C, N*S) matrix is a view of it, and its blocks are J_a^T rho' J_s."""
    from facesfm.solvers.problem import complete_state, gauge_free_mask
    from facesfm.solvers.residuals import cost_all, linearize_all
    from facesfm.solvers.schur import SchurFactor, normal_equations

    sf = make_face_problem(7, 30, seed=0)
    p, st = sf.problem, complete_state(sf.problem, sf.truth)
    lin = linearize_all(p, st, p.validate())
    _, rho1 = cost_all(p, st, lin)
    ne = normal_equations(p, st, lin, rho1)
    fac = SchurFactor(ne, 1e-3, gauge_free_mask(p, st), p.camera_dim)
    assert fac.Wm.data_ptr() == ne.W.data_ptr()
    J = lin[0]
    ref = torch.einsum("fnic,fnis->fncs", J.Ja, J.Js * rho1[0][..., None, None])
    torch.testing.assert_close(ne.W, ref, rtol=1e-12, atol=1e-9)
