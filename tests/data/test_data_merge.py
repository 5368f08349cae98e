import json

import pytest

from facesfm.data.dataset import find_sequences, merge_datasets
from facesfm.errors import InputError


def _render(out, seed):
    from facesfm.render.batch import build_batch_config, render_batch

    cfg = build_batch_config(subjects=2, frames=2, size="48", landmarks=68, seed=seed,
                             focal=80.0, yaw_range="-10,10")
    render_batch(cfg, out, progress=False, echo=lambda *a, **k: None)
    return out


@pytest.fixture(scope="module")
def two_renders(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    return _render(root / "a", 11), _render(root / "b", 12), root


def test_merge_lists_both_renders_by_absolute_path(two_renders, tmp_path):
    from click.testing import CliRunner

    from facesfm.cli import cli

    a, b, _ = two_renders
    res = CliRunner().invoke(cli, ["merge", str(a), str(b), "--out", str(tmp_path / "ab")])
    assert res.exit_code == 0, res.output
    assert "4 sequence(s) of 4 face(s) from 2 folder(s)" in res.output
    index = json.loads((tmp_path / "ab" / "dataset.json").read_text())
    seqs = find_sequences(tmp_path / "ab")
    assert seqs == find_sequences(a) + find_sequences(b)
    assert [e["name"] for e in index["sequences"]][:2] == ["a/00000_00", "a/00001_00"]
    assert [(p["seed"], p["subjects"]) for p in index["config"]["parts"]] == [(11, 2), (12, 2)]
    assert not any((tmp_path / "ab").glob("*_*"))  # nothing copied


def test_merge_refuses_bad_input(two_renders, tmp_path):
    a, b, root = two_renders
    with pytest.raises(InputError, match="at least two"):
        merge_datasets(tmp_path / "x", [a])
    with pytest.raises(InputError, match="twice"):
        merge_datasets(tmp_path / "x", [a, a])
    with pytest.raises(InputError, match="no dataset.json"):
        merge_datasets(tmp_path / "x", [a, tmp_path])
    with pytest.raises(InputError, match="already holds a dataset"):
        merge_datasets(a, [a, b])
    again = _render(root / "a_again", 11)  # the same master seed: the same faces
    with pytest.raises(InputError, match="face seed .* is in both"):
        merge_datasets(tmp_path / "y", [a, again])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_merge_refuses_two_visibility_label_rules(two_renders, tmp_path):
    """A set rendered before the patch-normal facing test (no facing_radius in its config:
    vertex normals) labels visibility differently; merging it with a new one is refused, and
    the parts keep their render config so the rule stays readable from the merge."""
    a, b, root = two_renders
    old = root / "old_rule"
    import shutil

    shutil.copytree(b, old)
    index = json.loads((old / "dataset.json").read_text())
    del index["config"]["render"]["facing_radius"]
    for e in index["sequences"]:  # new face seeds, so that only the rule differs
        e["face_seed"] = e["face_seed"] + 1
    (old / "dataset.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match="different rules"):
        merge_datasets(tmp_path / "z", [a, old])
    merged = merge_datasets(tmp_path / "ab", [a, b])
    assert [p["render"]["facing_radius"] for p in merged["config"]["parts"]] == [2.5, 2.5]


def test_label_rule_of_renders_and_merges(two_renders, tmp_path):
    from facesfm.data.dataset import label_rule

    a, b, _ = two_renders
    rule = {"occlusion": "front", "depth_tolerance": 2.0, "facing_radius": 2.5}
    assert label_rule(a) == rule
    merge_datasets(tmp_path / "ab", [a, b])
    assert label_rule(tmp_path / "ab") == rule
    with pytest.raises(InputError, match="cannot read"):
        label_rule(tmp_path)
