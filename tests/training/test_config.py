import pytest

from facesfm.config import to_dict
from facesfm.errors import InputError
from facesfm.training.config import (
    PRESETS,
    TrainConfig,
    build_train_config,
    preset_config,
)


def test_paper_preset_matches_the_paper():
    cfg = preset_config("paper")
    assert cfg.optim.betas == (0.9, 0.99)
    assert cfg.optim.batch_size == 2
    assert cfg.optim.epochs == 50
    assert cfg.data.image_size == 384
    assert cfg.data.landmarks == 800
    assert cfg.data.window is None  # BA over whole sequences
    assert cfg.landmarks.variant == "paper" and cfg.landmarks.in_channels == 1


def test_presets_are_data_and_round_trip():
    for name in PRESETS:
        cfg = preset_config(name)
        assert cfg.preset == name
        from facesfm.config import from_dict

        assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    assert preset_config("tiny").data.image_size == 64
    assert preset_config("small").data.image_size in (128, 192)


def test_ablations_change_only_their_terms():
    full = preset_config("tiny").sfm
    spec = preset_config("tiny", {"sfm": {"ablation": "spectral"}}).sfm
    lm = preset_config("tiny", {"sfm": {"ablation": "landmark"}}).sfm
    wf, ws, wl = full.effective_weights(), spec.effective_weights(), lm.effective_weights()
    assert ws.landmark == 0 and ws.pose_distill == 0 and ws.spectral == wf.spectral
    assert wl.spectral == 0 and wl.depth == 0 and wl.landmark == wf.landmark > 0
    assert full.ba_active() and not spec.ba_active() and lm.ba_active()
    off = preset_config("tiny", {"sfm": {"ba": {"enabled": False}}}).sfm
    assert not off.ba_active()


def test_unknown_keys_and_values_are_named(tmp_path):
    with pytest.raises(InputError, match="unknown preset 'huge'"):
        preset_config("huge")
    with pytest.raises(InputError, match="lr_typo"):
        preset_config("tiny", {"optim": {"lr_typo": 1.0}})
    with pytest.raises(InputError, match="sfm.ablation"):
        preset_config("tiny", {"sfm": {"ablation": "nope"}})
    with pytest.raises(InputError, match="image_size"):
        preset_config("tiny", {"data": {"image_size": 70}})
    with pytest.raises(InputError, match="frame_step"):
        preset_config("tiny", {"data": {"frame_step": 0}})
    with pytest.raises(InputError, match="sfm.ba_init"):
        preset_config("tiny", {"sfm": {"ba_init": "oracle"}})
    y = tmp_path / "c.yaml"
    y.write_text("optim:\n  batch_size: 3\n")
    assert build_train_config("tiny", str(y)).optim.batch_size == 3
    y.write_text("optim:\n  batchsize: 3\n")
    with pytest.raises(InputError, match="batchsize"):
        build_train_config("tiny", str(y))


def test_every_preset_builds_its_networks():
    from facesfm.networks import count_parameters
    from facesfm.training.landmarks import build_landmark_net
    from facesfm.training.sfm import build_sfm_nets

    sizes = {}
    for name in PRESETS:
        cfg = preset_config(name)
        lm = build_landmark_net(cfg)
        assert lm.cfg.num_landmarks == cfg.data.landmarks
        assert lm.cfg.variant == cfg.landmarks.variant
        sizes[name] = count_parameters(build_sfm_nets(cfg))
    assert sizes["tiny"] < sizes["small"] < sizes["paper"]
    with pytest.raises(InputError, match="landmarks.variant"):
        preset_config("tiny", {"landmarks": {"variant": "resnet"}})
