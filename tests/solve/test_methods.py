"""Several solve methods on held-out faces: the method table as data, and the summary over
faces that leaves refused and failed solves out of the means."""

import math

import pytest

from facesfm.errors import InputError
from facesfm.solve.methods import (
    BA_START,
    COLMAP,
    DETECTOR_ONLY,
    FaceRow,
    MethodFigures,
    method_configs,
    summarise,
)


def test_method_configs_follow_the_keys_and_leave_out_network_methods_without_networks():
    cfgs = method_configs("det.pt", None, ["tk68", "detector", "full"])
    assert list(cfgs) == ["factorisation, 68 landmarks", DETECTOR_ONLY]
    assert cfgs["factorisation, 68 landmarks"].landmarks == 68
    assert not cfgs["factorisation, 68 landmarks"].ba.enabled
    assert cfgs[DETECTOR_ONLY].landmark_checkpoint == "det.pt"
    full = method_configs("det.pt", "sfm.pt", ["full", "no_ba"])
    assert full["ours, full"].checkpoint == "sfm.pt" and full["ours, full"].depth == "network"
    assert full["ours, without BA"].poses_init == "network"
    with pytest.raises(InputError, match="unknown methods"):
        method_configs("det.pt", None, ["detector", "best"])


def _row(name, rot, cloud, refused=None, cloud_error=None, colmap=None):
    row = FaceRow(name)
    row.results[DETECTOR_ONLY] = MethodFigures(rot_deg=rot, cloud_mean_mm=cloud,
                                               refused=refused, cloud_error=cloud_error)
    row.poses_only = {BA_START: {"rot_deg": 2 * rot},
                      COLMAP: {"rot_deg": colmap} if colmap is not None else {"error": "no"}}
    return row


def test_summary_leaves_refused_and_failed_solves_out_of_the_means_and_counts_them():
    rows = [_row("a", 1.0, 0.5, colmap=1.5), _row("b", 3.0, math.nan, cloud_error="collapsed"),
            _row("c", 90.0, 40.0, refused="not a face", cloud_error="collapsed"), FaceRow("d")]
    rows[3].results[DETECTOR_ONLY] = "no frames"
    s = summarise(rows, [DETECTOR_ONLY, BA_START, COLMAP])
    det = s[DETECTOR_ONLY]
    assert det.get("rot_deg", "mean") == pytest.approx(2.0)  # a and b; c refused, d failed
    assert det.get("cloud_mean_mm", "median") == pytest.approx(0.5)  # b's NaN left out
    assert (det.failures, det.refused, det.no_cloud) == (2, 1, 2)
    assert det.get("now_median_mm", "mean") is None  # no face has the figure
    assert s[BA_START].get("rot_deg", "mean") == pytest.approx((2 + 6 + 180) / 3)
    assert (s[COLMAP].failures, s[COLMAP].get("rot_deg", "mean")) == (2, 1.5)


def test_a_face_row_writes_errors_and_refusals_where_they_apply():
    row = _row("a", 1.0, 0.5, colmap=1.5)
    row.results["other"] = "the solve failed"
    d = row.to_dict()
    assert d["other"] == {"error": "the solve failed"}
    assert "refused" not in d[DETECTOR_ONLY] and "cloud_error" not in d[DETECTOR_ONLY]
    assert d[DETECTOR_ONLY]["rot_deg"] == 1.0 and d[COLMAP] == {"rot_deg": 1.5}
    assert _row("b", 1.0, 0.5, refused="x").to_dict()[DETECTOR_ONLY]["refused"] == "x"
