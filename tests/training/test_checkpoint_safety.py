"""A checkpoint is data: loading one through any command never runs code from the file."""

import pickle

import pytest
import torch

from facesfm.cli import main
from facesfm.training.checkpoint import CHECKPOINT_FORMAT, load_checkpoint


class _Payload:
    """Unpickling this creates ``marker``: what a crafted checkpoint could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted(path, marker, stage):
    """A file that looks like one of our checkpoints and carries the payload inside."""
    torch.save({"format": CHECKPOINT_FORMAT, "stage": stage, "models": {},
                "config": {"x": _Payload(marker)}}, path)
    return path


def _run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    return e.value.code, err


def _assert_refused(code, err, path, marker):
    assert not marker.exists(), "the checkpoint's payload ran"
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and path.name in lines[0]
    assert "Traceback" not in err


def test_load_checkpoint_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    path = _crafted(tmp_path / "evil.pt", marker, "landmarks")
    from facesfm.errors import InputError

    with pytest.raises(InputError, match="evil.pt"):
        load_checkpoint(path)
    assert not marker.exists()
    # the same payload through a plain pickle is what weights_only=False would have done
    pickle.loads(pickle.dumps(_Payload(marker))).close()
    assert marker.exists()


@pytest.mark.parametrize("option", ["--landmark-checkpoint", "--checkpoint"])
def test_solve_refuses_crafted_checkpoint(tiny_data, tmp_path, capsys, option):
    seq = min(p for p in tiny_data.iterdir() if p.is_dir())
    marker = tmp_path / "pwned"
    stage = "landmarks" if option == "--landmark-checkpoint" else "sfm"
    path = _crafted(tmp_path / "evil.pt", marker, stage)
    extra = ["--oracle-depth", "--oracle-poses"] if stage == "landmarks" else [
        "--oracle-landmarks"]
    out = tmp_path / "out"
    code, err = _run(["solve", seq, option, path, *extra, "--out", out], capsys)
    _assert_refused(code, err, path, marker)
    assert not out.exists()


def test_eval_refuses_crafted_checkpoint(tiny_data, tmp_path, capsys):
    seq = min(p for p in tiny_data.iterdir() if p.is_dir())
    marker = tmp_path / "pwned"
    path = _crafted(tmp_path / "evil.pt", marker, "landmarks")
    code, err = _run(["eval", seq, "--out", tmp_path / "ev", "--landmark-checkpoint", path,
                      "--quiet"], capsys)
    _assert_refused(code, err, path, marker)


def test_train_refuses_crafted_checkpoints(tiny_data, tmp_path, capsys):
    marker = tmp_path / "pwned"
    common = ["--preset", "tiny", "--max-steps", "1", "--quiet"]
    lm = _crafted(tmp_path / "evil_lm.pt", marker, "landmarks")
    code, err = _run(["train", "sfm", tiny_data, "--out", tmp_path / "s",
                      "--landmarks-ckpt", lm, *common], capsys)
    _assert_refused(code, err, lm, marker)
    code, err = _run(["train", "landmarks", tiny_data, "--out", tmp_path / "l",
                      "--init", lm, *common], capsys)
    _assert_refused(code, err, lm, marker)
    # --resume reads the run folder's own last checkpoint
    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    last = _crafted(run / "checkpoints" / "last.pt", marker, "landmarks")
    code, err = _run(["train", "landmarks", tiny_data, "--out", run, "--resume", *common],
                     capsys)
    _assert_refused(code, err, last, marker)


def test_checkpoint_from_before_tensor_rng_state_loads(tmp_path):
    """Checkpoints written before the RNG state was stored as tensors hold numpy's RNG key
    as a numpy array; they still load, resume and restore the same RNG stream."""
    import numpy as np

    from facesfm.training.checkpoint import set_rng_state

    np.random.seed(7)
    old = {"format": CHECKPOINT_FORMAT, "stage": "landmarks", "models": {},
           "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                   "python": __import__("random").getstate()},
           "config": {}, "extra": {}}
    expect = np.random.rand(3)
    torch.save(old, tmp_path / "old.pt")
    ck = load_checkpoint(tmp_path / "old.pt", stage="landmarks")
    set_rng_state(ck["rng"])
    assert np.array_equal(np.random.rand(3), expect)
