"""Extra cost terms plug into our LM: optimality of the combined cost, implicit gradients."""

import torch
from ba_gradcheck import uv_gradient_and_finite_difference
from ba_terms import PointPrior  # examples/, on the path via conftest.py

from facesfm.geometry.se3 import se3_exp
from facesfm.solvers import BackwardMode, BAState, LMSolver, solve
from facesfm.solvers.residuals import cost_all, linearize_all
from facesfm.solvers.synthetic import make_face_problem, perturb_state


def _problem(weight=0.05):
    sf = make_face_problem(6, 25, seed=7)
    g = torch.Generator().manual_seed(0)
    target = sf.points + 3.0 * torch.randn(25, 3, generator=g, dtype=torch.float64)
    prior = PointPrior(target, torch.full((25,), weight, dtype=torch.float64))
    return sf, prior


def test_point_prior_jacobian_matches_finite_differences():
    sf, prior = _problem()
    st = perturb_state(sf.truth, seed=1)
    lin = prior.linearize(sf.problem, st)
    h = 1e-6
    for j, k in [(0, 0), (11, 2)]:
        P = st.points.clone()
        P[j, k] += h
        rp = prior.linearize(sf.problem, BAState(st.poses, P), False).r
        P[j, k] -= 2 * h
        rm = prior.linearize(sf.problem, BAState(st.poses, P), False).r
        fd = (rp - rm) / (2 * h)
        assert float((lin.Js[:, j, :, k] - fd[:, j]).abs().max()) < 1e-9
        assert float(fd[:, [i for i in range(25) if i != j]].abs().max()) == 0.0


def test_optimum_of_the_combined_cost_is_stationary_and_pulled_to_the_prior():
    sf, prior = _problem()
    p = sf.problem.replace(extra_terms=(prior,))
    init = perturb_state(sf.truth, seed=1)
    res = solve(p, init, LMSolver(backward=BackwardMode.NONE, ftol=1e-15))
    plain = solve(sf.problem, init, LMSolver(backward=BackwardMode.NONE, ftol=1e-15))
    # first-order optimality of the total cost, by autograd through a perturbation of everything
    xi = torch.zeros(6, 6, dtype=torch.float64, requires_grad=True)
    dX = torch.zeros(25, 3, dtype=torch.float64, requires_grad=True)
    st = BAState(se3_exp(xi) @ res.state.poses, res.state.points + dX)
    cost, _ = cost_all(p, st, linearize_all(p, st, jacobians=False))
    g_xi, g_X = torch.autograd.grad(cost, (xi, dX))
    assert float(g_X.abs().max()) < 1e-6 and float(g_xi[1:].abs().max()) < 1e-4
    d_res = (res.state.points - prior.target).norm(dim=1).mean()
    d_plain = (plain.state.points - prior.target).norm(dim=1).mean()
    assert float(d_res) < 0.9 * float(d_plain)
    assert res.final_cost > plain.final_cost  # the prior costs something


def test_implicit_gradient_with_an_extra_term_matches_finite_differences():
    sf, prior = _problem(weight=0.2)
    p = sf.problem.replace(extra_terms=(prior,))
    init = perturb_state(sf.truth, seed=1, rot_deg=1.0, trans_mm=3.0, point_mm=2.0)
    an, fd = uv_gradient_and_finite_difference(p, init, LMSolver(), seed=3)
    assert abs(fd) > 1e-3
    assert abs(an - fd) < 1e-3 * abs(fd), (an, fd)
