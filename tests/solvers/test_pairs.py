import numpy as np

from facesfm.solvers import AllPairs, LogSpaced, TopCovisible, Window


def _offsets(pairs):
    return sorted({int(abs(a - b)) for a, b in pairs})


def test_log_spaced_pairs_are_powers_of_two_apart_both_ways():
    F = 61
    p = LogSpaced().pairs(np.ones((F, F), int))
    assert _offsets(p) == [1, 2, 4, 8, 16, 32]
    assert len(p) == 2 * sum(F - d for d in (1, 2, 4, 8, 16, 32)) == 606
    assert {tuple(x) for x in p} == {(b, a) for a, b in p}  # both directions
    assert len(AllPairs().pairs(np.ones((F, F), int))) == F * (F - 1)


def test_pair_selections_skip_frames_that_share_no_landmark():
    covis = np.ones((5, 5), int)
    covis[0, 4] = covis[4, 0] = 0
    covis[1, 2] = covis[2, 1] = 0
    for sel in (LogSpaced(), AllPairs(), Window(4), TopCovisible(4)):
        p = {tuple(x) for x in sel.pairs(covis)}
        assert not p & {(0, 4), (4, 0), (1, 2), (2, 1)}, sel
        assert all(a != b for a, b in p), sel
    assert {tuple(x) for x in LogSpaced().pairs(covis)} == {
        (0, 1), (1, 0), (0, 2), (2, 0), (1, 3), (3, 1), (2, 3), (3, 2), (2, 4), (4, 2),
        (3, 4), (4, 3)}
