"""Checkpoints written before PoseNet's GroupNorm and difference input still load, as the plain
encoder, and new ones round-trip with both."""
import torch

from facesfm.config import from_dict, to_dict
from facesfm.training.checkpoint import TrainState, save_checkpoint
from facesfm.training.config import TrainConfig, preset_config, upgrade_checkpoint_config
from facesfm.training.inference import load_networks
from facesfm.training.sfm import build_sfm_nets


def _norms(net) -> int:
    return sum(isinstance(m, torch.nn.GroupNorm) for m in net.modules())


def test_old_checkpoint_loads_as_plain_posenet(tmp_path):
    cfg = preset_config("tiny", {"sfm": {"pose_norm": False, "pose_difference": False}})
    nets = build_sfm_nets(cfg)
    assert _norms(nets.pose) == 0 and nets.pose.input_channels == 6
    old = to_dict(cfg)
    del old["sfm"]["pose_norm"], old["sfm"]["pose_difference"]  # as written before the options
    path = save_checkpoint(tmp_path / "old.pt", models={"model": nets}, optimizer=None,
                           state=TrainState(), config=old, stage="sfm")
    loaded = load_networks(checkpoint=path)
    assert _norms(loaded.pose) == 0 and loaded.pose.input_channels == 6
    x, y = torch.rand(2, 1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.pose(x, y).vector, nets.pose(x, y).vector)


def test_new_checkpoint_keeps_norm_and_difference(tmp_path):
    cfg = preset_config("tiny")
    assert cfg.sfm.pose_norm and cfg.sfm.pose_difference
    nets = build_sfm_nets(cfg)
    assert _norms(nets.pose) == 6 and nets.pose.input_channels == 9
    path = save_checkpoint(tmp_path / "new.pt", models={"model": nets}, optimizer=None,
                           state=TrainState(), config=to_dict(cfg), stage="sfm")
    assert upgrade_checkpoint_config(to_dict(cfg)) == to_dict(cfg)
    loaded = load_networks(checkpoint=path)
    assert _norms(loaded.pose) == 6 and loaded.pose.input_channels == 9


def test_a_checkpoint_with_the_old_ba_layer_settings_loads_with_the_same_ones(tmp_path):
    """Before the test-time and training BA shared one config, ``sfm.ba`` held ``huber_px``
    (None: no kernel), ``init`` and ``backend``; a checkpoint of then loads with the same
    layer, and its resume compares equal to today's config."""
    from facesfm.solvers.landmark_ba import KernelKind
    from facesfm.training.checkpoint import load_checkpoint

    for huber, kernel in ((2.0, KernelKind.HUBER), (None, KernelKind.NONE)):
        cfg = preset_config("small")  # classical layer started from the landmarks
        if huber is None:
            cfg = preset_config("small", {"sfm": {"ba": {"kernel": "none"}}})
        old = to_dict(cfg)
        ba = old["sfm"]["ba"]
        for k in ("kernel", "kernel_px", "ftol", "depth_prior_weight"):
            del ba[k]
        ba.update(backend="lm", huber_px=huber, init=old["sfm"].pop("ba_init"))
        path = save_checkpoint(tmp_path / "old.pt", models={"model": build_sfm_nets(cfg)},
                               optimizer=None, state=TrainState(), config=old, stage="sfm")
        new = load_checkpoint(path)["config"]
        assert new == to_dict(cfg)
        assert new["sfm"]["ba_init"] == "landmarks"
        assert from_dict(TrainConfig, new).sfm.ba.kernel is kernel
