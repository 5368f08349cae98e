"""LMSolver robustness and speed-related behaviour: the damping floor (zero-baseline starts in the
depth parameterisation, PoseNet's near-identity output at the start of training), Ceres'
corrector for robust kernels (IRLS where rho'' <= 0), and that neither moves the optimum or the
implicit gradients."""

import pytest
import torch

from facesfm.geometry.se3 import rotation_angle
from facesfm.solvers import (
    AllPairs,
    BackwardMode,
    BAState,
    CauchyKernel,
    HuberKernel,
    LMSolver,
    Parameterization,
    SolverError,
    TopCovisible,
    TrivialKernel,
    Window,
)
from facesfm.solvers.problem import Kernel
from facesfm.solvers.residuals import linearize
from facesfm.solvers.schur import _robust_weights
from facesfm.solvers.synthetic import make_face_problem, perturb_state


def _deg(a, b):
    return torch.rad2deg(rotation_angle(a[:, :3, :3], b[:, :3, :3]))


def _zero_baseline(pairs, kernel, F=12, N=68, seed=3):
    """A depth problem with every initial pose equal to frame 0's (no baseline, zero log depth
    scales: the true landmark depths are the observed ones)."""
    sf = make_face_problem(F, N, seed=seed, noise_px=0.5, yaw_deg=30.0,
                           parameterization=Parameterization.DEPTH, pairs=pairs, kernel=kernel)
    init = BAState(sf.truth.poses[:1].expand(F, 4, 4).clone())
    return sf, init


@pytest.mark.parametrize("pairs,kernel", [(Window(2), TrivialKernel()), (AllPairs(), HuberKernel(2.0))])
def test_zero_baseline_depth_start_converges_to_the_optimum(pairs, kernel):
    sf, init = _zero_baseline(pairs, kernel)
    # the old damping (lam * diag(H) only) cannot factor the system: the depth scales have
    # exactly zero curvature when all cameras share one centre
    with pytest.raises(SolverError, match="singular"):
        LMSolver(backward=BackwardMode.NONE, min_diagonal=0.0).solve(sf.problem, init)
    solver = LMSolver(backward=BackwardMode.NONE)
    res = solver.solve(sf.problem, init)
    ref = solver.solve(sf.problem, sf.truth)  # the optimum near the truth
    assert res.converged and res.iterations <= 15
    assert res.cost[0] > 10 * res.final_cost
    assert abs(res.final_cost - ref.final_cost) <= 1e-9 * ref.final_cost
    assert float(_deg(res.poses, ref.poses).max()) < 1e-5
    assert float((res.state.log_scale - ref.state.log_scale).abs().max()) < 1e-7
    assert float(_deg(res.poses, sf.truth.poses).max()) < 1.5  # 0.5 px noise, 12 frames


def test_damping_floor_does_not_change_the_optimum():
    sf = make_face_problem(10, 40, seed=1, parameterization=Parameterization.DEPTH,
                           depth_noise=0.01, depth_scale_spread=0.05, pairs=Window(2),
                           kernel=HuberKernel(1.5))
    init = perturb_state(sf.truth, seed=2, log_scale=0.05)
    tight = {"backward": BackwardMode.NONE, "ftol": 1e-16, "xtol": 1e-13, "gtol": 1e-11,
             "max_iterations": 200}
    a = LMSolver(min_diagonal=0.0, **tight).solve(sf.problem, init)
    b = LMSolver(min_diagonal=1e-3, **tight).solve(sf.problem, init)  # a heavy floor
    assert a.converged and b.converged
    assert abs(a.final_cost - b.final_cost) <= 1e-12 * a.final_cost
    assert float(_deg(a.poses, b.poses).max()) < 1e-6
    assert float((a.poses[:, :3, 3] - b.poses[:, :3, 3]).abs().max()) < 1e-6  # mm
    assert float((a.state.log_scale - b.state.log_scale).abs().max()) < 1e-9
    assert float((a.state.depth_correction - b.state.depth_correction).abs().max()) < 1e-9


def test_implicit_gradient_after_a_zero_baseline_start_matches_the_one_from_the_truth():
    """The implicit backward solves with the exact Hessian at the optimum (the damped factor is
    only its CG preconditioner), so where the solve started cannot change the gradient."""
    sf, init = _zero_baseline(Window(2), TrivialKernel(), F=8, N=40)
    p = sf.problem
    grads = []
    for start in (init, sf.truth):
        uv = p.uv.clone().requires_grad_()
        depth = p.depth.clone().requires_grad_()
        res = LMSolver(ftol=1e-14).solve(p.replace(uv=uv, depth=depth), start)
        loss = res.poses[:, :3, :3].sum() + (res.poses[:, :3, 3] / 100.0).sum()
        grads.append(torch.autograd.grad(loss, (uv, depth)))
    for a, b in zip(*grads):
        assert float(a.norm()) > 1e-4
        assert float((a - b).norm() / a.norm()) < 1e-6


def test_zero_pose_jacobian_still_raises_with_the_floor():
    sf = make_face_problem(4, 15, seed=0)
    K = sf.problem.K.clone()
    K[2, 0, 0] = 0.0
    K[2, 1, 1] = 0.0
    with pytest.raises(SolverError, match="frame 2's pose has no constraint"):
        LMSolver().solve(sf.problem.replace(K=K), perturb_state(sf.truth, seed=1))


@pytest.mark.parametrize("kernel", [HuberKernel(2.0), CauchyKernel(2.0)])
def test_corrector_is_plain_irls_where_the_kernel_curvature_is_not_positive(kernel):
    sf = make_face_problem(4, 15, seed=0, noise_px=3.0)
    lin = linearize(sf.problem, perturb_state(sf.truth, seed=1))
    s = (lin.r**2).sum(-1)
    _, r1, r2 = kernel.rho(s)
    assert bool((r2 <= 0).all()) and bool((r1 < 1).any())  # outliers present
    assert _robust_weights(sf.problem.replace(kernel=kernel), lin, r1) is None


class _Quartic(Kernel):
    """rho(s) = s + s^2 / 2 (positive curvature): the corrector must keep it."""

    def rho(self, s):
        return s + 0.5 * s * s, 1.0 + s, torch.ones_like(s)


def test_corrector_keeps_positive_kernel_curvature():
    sf = make_face_problem(4, 15, seed=0)
    p = sf.problem.replace(kernel=_Quartic())
    lin = linearize(p, perturb_state(sf.truth, seed=1))
    _, r1, _ = p.kernel.rho((lin.r**2).sum(-1))
    Wt = _robust_weights(p, lin, r1)
    r = lin.r
    expect = r1[..., None, None] * torch.eye(2, dtype=r.dtype) + 2.0 * r[..., :, None] * r[..., None, :]
    assert torch.allclose(Wt, expect, rtol=1e-12, atol=1e-9)


def test_huber_depth_solve_converges_in_few_iterations():
    """61 frames x 300 landmarks, TopCovisible(4) as in `facesfm solve`, Huber 2 px from a
    3 deg / 1 cm perturbation: the clamped-curvature corrector took ~3x more iterations."""
    sf = make_face_problem(61, 300, seed=0, noise_px=0.5, parameterization=Parameterization.DEPTH,
                           depth_noise=0.01, kernel=HuberKernel(2.0), pairs=TopCovisible(4))
    init = BAState(perturb_state(sf.truth, seed=0, rot_deg=3.0, trans_mm=10.0).poses)
    with torch.no_grad():
        res = LMSolver(backward=BackwardMode.NONE).solve(sf.problem, init)
    assert res.converged and res.iterations <= 20
    assert res.cost[0] > 30 * res.final_cost


def test_implicit_solve_does_not_reuse_a_heavily_damped_factor():
    """LM may end on a strongly damped step (rounding-level gain ratios near the optimum); the
    implicit backward must still solve H z = g to its tolerance, not stop at the CG cap."""
    from facesfm.solvers import implicit as I
    from facesfm.solvers import schur as S
    from facesfm.solvers.problem import gauge_free_mask
    from facesfm.solvers.residuals import cost_all, linearize_all

    sf = make_face_problem(5, 20, seed=0)
    p = sf.problem
    solver = LMSolver(ftol=1e-14, backward=BackwardMode.NONE)
    st = solver.solve(p, perturb_state(sf.truth, seed=1)).state
    free = gauge_free_mask(p, st)
    lins = linearize_all(p, st)
    _, rho1 = cost_all(p, st, lins)
    damped = S.SchurFactor(S.normal_equations(p, st, lins, rho1), 1e3, free, 6, 1e-8)
    g = torch.Generator().manual_seed(0)
    gc = torch.randn(5, 6, generator=g, dtype=torch.float64) * free
    gs = torch.randn(20, 3, generator=g, dtype=torch.float64)
    implicit = LMSolver(backward=BackwardMode.IMPLICIT, refine_iterations=30)
    zc, zs = I._solve_hessian(implicit, p, st, None, free, gc, gs, damped)
    hc, hs = I._hvp(p, st, None, zc, zs)
    res = torch.cat([((hc - gc) * free).reshape(-1), (hs - gs).reshape(-1)]).norm()
    assert float(res) < 1e-6 * float(torch.cat([gc.reshape(-1), gs.reshape(-1)]).norm())


@pytest.mark.parametrize("threads,expect", [(1, 1), (None, 2)])
def test_solver_runs_with_its_thread_count_and_restores_the_process_one(monkeypatch, threads, expect):
    from facesfm.solvers import lm as L

    seen = []
    orig = L.linearize_all

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return orig(*a, **k)

    monkeypatch.setattr(L, "linearize_all", spy)
    sf = make_face_problem(4, 15, seed=0)
    torch.set_num_threads(2)  # the autouse fixture restores the original afterwards
    res = LMSolver(backward=BackwardMode.NONE, threads=threads).solve(sf.problem, perturb_state(sf.truth, seed=1))
    assert res.converged and seen and set(seen) == {expect}
    assert torch.get_num_threads() == 2
