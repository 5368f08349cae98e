"""Reading sequences back, and clear errors for broken ones."""

import json
import shutil

import numpy as np
import pytest

from facesfm.data.format import load_sequence
from facesfm.errors import InputError


def test_load_roundtrip(small_seq):
    seq = load_sequence(small_seq)
    assert len(seq) == 8 and (seq.width, seq.height) == (128, 128)
    np.testing.assert_allclose(seq.K, [[170, 0, 63.5], [0, 170, 63.5], [0, 0, 1]])
    assert seq.cam_T_world.shape == (8, 4, 4) and seq.uv.shape == (8, 800, 2)
    assert seq.visible.dtype == bool and seq.z.shape == (8, 800)
    np.testing.assert_allclose(seq.yaw_deg, np.linspace(-60, 60, 8))
    assert np.abs(seq.roll_deg).max() > 0.5  # jitter stored per frame
    assert seq.image_paths[3].name == "000003.png" and seq.image_paths[3].is_file()
    assert seq.image(0).shape == (128, 128, 3)
    assert load_sequence(small_seq / "sequence.json").root == small_seq
    assert seq.meta["face"]["source"] == "builtin"


@pytest.fixture()
def broken(tmp_path, small_seq):
    dst = tmp_path / "seq"
    shutil.copytree(small_seq, dst)
    return dst


def _edit_meta(path, fn):
    meta = json.loads((path / "sequence.json").read_text())
    fn(meta)
    (path / "sequence.json").write_text(json.dumps(meta))


def test_missing_folder_and_json(tmp_path, broken):
    with pytest.raises(InputError, match="not found.*nope"):
        load_sequence(tmp_path / "nope")
    (broken / "sequence.json").unlink()
    with pytest.raises(InputError, match="no sequence.json"):
        load_sequence(broken)


def test_wrong_format_and_version(broken):
    _edit_meta(broken, lambda m: m.update(version=2))
    with pytest.raises(InputError, match="version 2"):
        load_sequence(broken)
    _edit_meta(broken, lambda m: m.update(format="something-else", version=1))
    with pytest.raises(InputError, match="something-else"):
        load_sequence(broken)
    (broken / "sequence.json").write_text("{not json")
    with pytest.raises(InputError, match="sequence.json: not valid JSON"):
        load_sequence(broken)


def test_malformed_metadata(broken):
    _edit_meta(broken, lambda m: m["frames"][2].pop("cam_T_world"))
    with pytest.raises(InputError, match="malformed metadata.*cam_T_world"):
        load_sequence(broken)


def test_missing_frame_file_is_named(broken):
    (broken / "depth" / "000005.npy").unlink()
    with pytest.raises(InputError, match=r"missing frame file: .*depth/000005.npy"):
        load_sequence(broken)
    seq = load_sequence(broken, check_files=False)  # lazily: at access time
    with pytest.raises(InputError, match=r"depth/000005.npy"):
        seq.depth(5)


def test_unreadable_image_is_named(broken):
    (broken / "rgb" / "000002.png").write_bytes(b"this is not a png")
    seq = load_sequence(broken)
    with pytest.raises(InputError, match=r"unreadable image: .*rgb/000002.png"):
        seq.image(2)
    from PIL import Image

    Image.new("RGB", (10, 10)).save(broken / "rgb" / "000003.png")
    with pytest.raises(InputError, match="000003.png: size 10x10"):
        seq.image(3)


def test_inconsistent_landmarks(broken):
    with np.load(broken / "landmarks.npz") as z:
        arrays = dict(z)
    arrays["uv"] = arrays["uv"][:5]
    np.savez(broken / "landmarks.npz", **arrays)
    with pytest.raises(InputError, match="uv has shape"):
        load_sequence(broken)
    (broken / "landmarks.npz").unlink()
    with pytest.raises(InputError, match="missing landmark file"):
        load_sequence(broken)
