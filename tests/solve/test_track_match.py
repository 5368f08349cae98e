"""The tracks' NCC search: correlations by convolution and spreads by box sums give the NCC of
every window (checked against forming the windows in float64) and find a patch where it is."""

import torch

from facesfm.solve.tracks import _match, _normalise, _patches


def _smooth_image(seed: int, size: int = 96) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, size, size, generator=g)
    k = torch.ones(1, 1, 5, 5) / 25
    return torch.nn.functional.conv2d(x, k, padding=2)[0, 0]


def _windows(img, centres, r):
    """Windows of one image (the matcher's batch of images, holding only this one)."""
    return _patches(img[None], torch.zeros(len(centres), dtype=torch.long), centres, r)


def _search(tmpl, img, guess, s, r):
    return _match(tmpl, img[None], torch.zeros(len(guess), dtype=torch.long), guess, s, r)


def test_match_scores_are_the_ncc_of_every_window():
    img = _smooth_image(0)
    r, s = 4, 6
    kp = torch.tensor([[30.0, 40.0], [50.0, 45.0], [60.0, 30.0]])
    tmpl = _normalise(_windows(_smooth_image(1), kp, r))  # unrelated texture: any peak
    _, score = _search(tmpl, img, kp, s, r)
    # brute force in float64: every integer offset's window formed and compared
    P = 2 * r + 1
    for i in range(len(kp)):
        best = -2.0
        for dy in range(-s, s + 1):
            for dx in range(-s, s + 1):
                w = _windows(img, kp[i:i + 1] + torch.tensor([[dx, dy]]), r)[0].double()
                w = w - w.mean()
                ncc = float((w * tmpl[i].double()).sum() / w.square().sum().sqrt())
                best = max(best, ncc)
        if torch.isfinite(score[i]):
            assert abs(float(score[i]) - best) < 1e-4
    assert P == tmpl.shape[-1] and torch.isfinite(score).any()


def test_match_finds_a_shifted_patch():
    img = _smooth_image(2)
    r, s = 4, 6
    kp = torch.tensor([[40.0, 40.0], [55.0, 50.0]])
    tmpl = _normalise(_windows(img, kp + torch.tensor([[3.0, -2.0]]), r))
    uv, score = _search(tmpl, img, kp, s, r)
    # the peak is found at the shift (score 1); the parabola through its neighbours moves the
    # sub-pixel estimate by up to 0.07 px here (the peak is not symmetric)
    torch.testing.assert_close(uv, kp + torch.tensor([[3.0, -2.0]]), atol=0.1, rtol=0)
    assert (score > 0.9999).all()
