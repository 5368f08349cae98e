"""Analytic Jacobians of both parameterisations against float64 central finite differences."""

import pytest
import torch

from facesfm.geometry.se3 import se3_exp
from facesfm.solvers.problem import AllPairs, BAState, Parameterization, Window
from facesfm.solvers.residuals import linearize
from facesfm.solvers.synthetic import make_face_problem, perturb_state

H = 1e-6


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _fd_pose(problem, state, pairs, f, k):
    def r_at(eps):
        xi = torch.zeros(problem.num_frames, 6, dtype=torch.float64)
        xi[f, k] = eps
        st = BAState(se3_exp(xi) @ state.poses, state.points, state.log_scale, state.depth_correction)
        return linearize(problem, st, pairs, jacobians=False).r

    return (r_at(H) - r_at(-H)) / (2 * H)


def test_classical_jacobians_match_finite_differences():
    sf = make_face_problem(6, 25, seed=1)
    p = sf.problem
    st = perturb_state(sf.truth, seed=2)
    lin = linearize(p, st)
    assert lin.Ja.shape == (6, 25, 2, 6) and lin.Js.shape == (6, 25, 2, 3)
    for f in (0, 3):
        for k in range(6):
            fd = _fd_pose(p, st, None, f, k)
            assert _rel(lin.Ja[f, :, :, k], fd[f]) < 1e-6
            assert fd[[i for i in range(6) if i != f]].abs().max() == 0  # only frame f moves
    for j in (0, 7):
        for k in range(3):
            def r_at(eps, j=j, k=k):
                P = st.points.clone()
                P[j, k] += eps
                return linearize(p, BAState(st.poses, P), jacobians=False).r
            fd = (r_at(H) - r_at(-H)) / (2 * H)
            assert _rel(lin.Js[:, j, :, k], fd[:, j]) < 1e-6


@pytest.mark.parametrize("pairs", [Window(1), AllPairs()])
def test_depth_jacobians_match_finite_differences(pairs):
    sf = make_face_problem(5, 20, seed=3, parameterization=Parameterization.DEPTH,
                           depth_noise=0.01, depth_scale_spread=0.05, pairs=pairs)
    p = sf.problem
    st = perturb_state(sf.truth, seed=4, log_scale=0.05)
    st.depth_correction = 0.01 * torch.randn(20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pr = p.frame_pairs()
    lin = linearize(p, st, pr)
    assert lin.Ja.shape == (len(pr), 20, 2, 7)
    for f in range(5):
        for k in range(6):
            fd = _fd_pose(p, st, pr, f, k)
            an = torch.zeros_like(fd)
            an += torch.where((pr[:, 0] == f)[:, None, None], lin.Ja[..., k], 0.0)
            an += torch.where((pr[:, 1] == f)[:, None, None], lin.Jb[..., k], 0.0)
            assert _rel(an, fd) < 1e-6
        def r_s(eps, f=f):
            s = st.log_scale.clone()
            s[f] += eps
            return linearize(p, BAState(st.poses, None, s, st.depth_correction), pr, False).r
        fd = (r_s(H) - r_s(-H)) / (2 * H)
        an = torch.where((pr[:, 0] == f)[:, None, None], lin.Ja[..., 6], 0.0)
        assert lin.Jb[..., 6].abs().max() == 0
        assert _rel(an, fd) < 1e-6
    for i in (0, 11):
        def r_d(eps, i=i):
            d = st.depth_correction.clone()
            d[i] += eps
            return linearize(p, BAState(st.poses, None, st.log_scale, d), pr, False).r
        fd = (r_d(H) - r_d(-H)) / (2 * H)
        assert _rel(lin.Js[:, i, :, 0], fd[:, i]) < 1e-6
        assert fd[:, [j for j in range(20) if j != i]].abs().max() == 0


def test_residuals_vanish_at_truth_without_noise():
    for par in Parameterization:
        sf = make_face_problem(4, 15, seed=5, noise_px=0.0, parameterization=par,
                               depth_scale_spread=0.1)
        lin = linearize(sf.problem, sf.truth)
        assert lin.valid.sum() > 20
        assert lin.r.abs().max() < 1e-9
