"""Theseus backend on small problems: reaches the reference optimum; gradients vs finite
differences (Theseus' IMPLICIT/TRUNCATED differentiate damped Gauss-Newton steps, exact only for
zero residuals, so they are checked on a noise-free problem; UNROLL on a noisy one)."""

import pytest
import torch

from facesfm.geometry.se3 import rotation_angle
from facesfm.solvers import BackwardMode, ScipyReference, solve
from facesfm.solvers.synthetic import make_face_problem, perturb_state

pytest.importorskip("theseus", reason="theseus-ai not installed (see the Makefile)")
from ba_gradcheck import uv_gradient_and_finite_difference

from facesfm.solvers.theseus_backend import LinearSolver, TheseusBackend


@pytest.mark.parametrize("linear_solver", [LinearSolver.DENSE, LinearSolver.CHOLMOD])
def test_theseus_reaches_the_reference_optimum(linear_solver):
    if linear_solver == LinearSolver.CHOLMOD:
        pytest.importorskip("sksparse", reason="scikit-sparse (CHOLMOD) not installed")
    sf = make_face_problem(5, 30, seed=0)
    init = perturb_state(sf.truth, seed=1)
    ref = solve(sf.problem, init, ScipyReference())
    res = solve(sf.problem, init, TheseusBackend(linear_solver=linear_solver,
                                                 backward=BackwardMode.NONE))
    assert res.converged
    assert abs(res.final_cost - ref.final_cost) <= 1e-6 * ref.final_cost
    ang = torch.rad2deg(rotation_angle(res.poses[:, :3, :3], ref.poses[:, :3, :3]))
    assert float(ang.max()) < 0.01


@pytest.mark.parametrize(
    "mode,noise",
    [(BackwardMode.UNROLL, 1.0), (BackwardMode.IMPLICIT, 0.0), (BackwardMode.TRUNCATED, 0.0)],
)
def test_theseus_gradient_matches_finite_differences(mode, noise):
    sf = make_face_problem(5, 20, seed=0, noise_px=noise)
    p = sf.problem
    init = perturb_state(sf.truth, seed=1, rot_deg=1.0, trans_mm=3.0, point_mm=2.0)
    an, fd = uv_gradient_and_finite_difference(p, init, TheseusBackend(backward=mode, max_iterations=30), seed=5)
    assert abs(fd) > 1e-3
    assert abs(an - fd) < 1e-3 * abs(fd), (an, fd)
