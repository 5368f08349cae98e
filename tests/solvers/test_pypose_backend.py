"""PyPose backend on a small problem: reaches the reference optimum; its implicit gradient
(our IFT machinery at PyPose's optimum) matches finite differences."""

import pytest
import torch

from facesfm.geometry.se3 import rotation_angle
from facesfm.solvers import BackwardMode, ScipyReference, solve
from facesfm.solvers.synthetic import make_face_problem, perturb_state

pytest.importorskip("pypose", reason="pypose not installed (pip install pypose==0.9.5)")
from ba_gradcheck import uv_gradient_and_finite_difference

from facesfm.solvers.pypose_backend import PyPoseBackend


def test_pypose_reaches_the_reference_optimum():
    sf = make_face_problem(5, 30, seed=0)
    init = perturb_state(sf.truth, seed=1)
    ref = solve(sf.problem, init, ScipyReference())
    res = solve(sf.problem, init, PyPoseBackend(backward=BackwardMode.NONE))
    assert res.converged
    assert abs(res.final_cost - ref.final_cost) <= 1e-6 * ref.final_cost
    ang = torch.rad2deg(rotation_angle(res.poses[:, :3, :3], ref.poses[:, :3, :3]))
    assert float(ang.max()) < 0.01
    assert float((res.poses[0] - init.poses[0]).abs().max()) == 0.0


def test_pypose_implicit_gradient_matches_finite_differences():
    sf = make_face_problem(5, 20, seed=0)
    p = sf.problem
    init = perturb_state(sf.truth, seed=1, rot_deg=1.0, trans_mm=3.0, point_mm=2.0)
    an, fd = uv_gradient_and_finite_difference(p, init, PyPoseBackend(), seed=5)
    assert abs(fd) > 1e-3
    assert abs(an - fd) < 1e-3 * abs(fd), (an, fd)
