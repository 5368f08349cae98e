"""SequenceDataset: shapes, windows, and geometry-consistent augmentation."""

import numpy as np
import pytest
import torch

from facesfm.data.dataset import (
    AugmentConfig,
    SequenceDataset,
    collate_samples,
    resize_affine,
)
from facesfm.data.format import load_sequence
from facesfm.errors import InputError
from facesfm.geometry.camera import project, transform


def _bilinear(img, uv):
    """Sample (C, H, W) at (N, 2) OpenCV pixel positions."""
    _, H, W = img.shape
    u, v = uv[:, 0], uv[:, 1]
    c0 = np.clip(np.floor(u).astype(int), 0, W - 2)
    r0 = np.clip(np.floor(v).astype(int), 0, H - 2)
    a, b = u - c0, v - r0
    return (
        (1 - a) * (1 - b) * img[:, r0, c0]
        + a * (1 - b) * img[:, r0, c0 + 1]
        + (1 - a) * b * img[:, r0 + 1, c0]
        + a * b * img[:, r0 + 1, c0 + 1]
    ).T


def test_whole_sequences_and_windows(small_seq):
    ds = SequenceDataset(small_seq)
    assert len(ds) == 1
    s = ds[0]
    assert s.images.shape == (8, 3, 128, 128) and s.images.dtype == torch.float32
    assert 0 <= s.images.min() and s.images.max() <= 1 and s.images.max() > 0.5
    assert s.depth.shape == (8, 1, 128, 128) and s.mask.shape == (8, 1, 128, 128)
    assert s.mask.dtype == torch.bool and s.K.shape == (3, 3)
    assert s.cam_T_world.shape == (8, 4, 4) and s.uv.shape == (8, 800, 2)
    assert s.visible.shape == (8, 800) and s.xyz.shape == (800, 3)
    seq = load_sequence(small_seq)
    np.testing.assert_array_equal(
        s.images[3].permute(1, 2, 0).numpy() * 255, seq.image(3).astype(np.float32)
    )
    win = SequenceDataset([small_seq], window=3, stride=2, landmarks=68)
    assert len(win) == 3  # starts 0, 2, 4
    w = win[2]
    np.testing.assert_array_equal(w.frames.numpy(), [4, 5, 6])
    assert w.uv.shape == (3, 68, 2)
    np.testing.assert_allclose(w.uv.numpy(), seq.uv[4:7, :68], atol=1e-4)
    b = collate_samples([win[0], win[1]])
    assert b.images.shape == (2, 3, 3, 128, 128) and b.name == ["small", "small"]
    loader = torch.utils.data.DataLoader(win, batch_size=3, collate_fn=collate_samples)
    assert next(iter(loader)).uv.shape == (3, 3, 68, 2)


def test_frame_step_takes_every_kth_frame(small_seq):
    seq = load_sequence(small_seq)  # 8 frames
    ds = SequenceDataset([small_seq], window=3, frame_step=3, landmarks=68)
    assert len(ds) == 1  # a window spans 7 frames; the default stride (9) fits one start
    s = ds[0]
    np.testing.assert_array_equal(s.frames.numpy(), [0, 3, 6])
    np.testing.assert_allclose(s.uv.numpy(), seq.uv[[0, 3, 6], :68], atol=1e-4)
    np.testing.assert_allclose(s.cam_T_world.numpy(), seq.cam_T_world[[0, 3, 6]], atol=1e-5)
    np.testing.assert_array_equal(
        s.images[2].permute(1, 2, 0).numpy() * 255, seq.image(6).astype(np.float32)
    )
    assert len(SequenceDataset([small_seq], window=3, frame_step=2, stride=1)) == 4
    whole = SequenceDataset([small_seq], frame_step=3)[0]  # whole sequence: frames 0, 3, 6
    np.testing.assert_array_equal(whole.frames.numpy(), [0, 3, 6])
    with pytest.raises(InputError, match="frame_step"):
        SequenceDataset([small_seq], window=3, frame_step=4)  # spans 9 > 8 frames
    with pytest.raises(InputError, match="frame_step"):
        SequenceDataset([small_seq], window=3, frame_step=0)


def test_varied_step_and_reversed_windows(small_seq):
    """With augmentation, each sample draws its step from frame_step..frame_step_max and runs
    backwards with probability ``reverse``; the draws are seeded per (epoch, sample), leave the
    other augmentations as they were, and unaugmented samples keep frame_step in order."""
    seq = load_sequence(small_seq)  # 8 frames
    aug = AugmentConfig(reverse=0.5)
    ds = SequenceDataset([small_seq], window=3, frame_step=1, frame_step_max=3, stride=1,
                         augment=aug, landmarks=68, seed=5)
    assert len(ds) == 2  # placed so that the longest span (7 frames) fits
    seen_steps, seen_dirs = set(), set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            fr = s.frames.numpy()
            d = np.diff(fr)
            assert len(set(d)) == 1 and 1 <= abs(d[0]) <= 3
            seen_steps.add(abs(int(d[0])))
            seen_dirs.add(int(np.sign(d[0])))
            assert fr.min() >= 0 and fr.max() < len(seq)
            np.testing.assert_allclose(s.cam_T_world.numpy(), seq.cam_T_world[fr], atol=1e-5)
    assert seen_steps == {1, 2, 3} and seen_dirs == {-1, 1}
    ds.set_epoch(3)
    a, b = ds[1], ds[1]
    np.testing.assert_array_equal(a.frames.numpy(), b.frames.numpy())
    np.testing.assert_array_equal(a.images.numpy(), b.images.numpy())
    # the zoom/shift draws do not depend on the motion draws: same K as without them
    plain = SequenceDataset([small_seq], window=3, frame_step=1, stride=1, augment=aug,
                            landmarks=68, seed=5)
    plain.set_epoch(3)
    np.testing.assert_array_equal(plain[1].K.numpy(), a.K.numpy())
    val = SequenceDataset([small_seq], window=3, frame_step=2, frame_step_max=3, stride=1,
                          landmarks=68)
    for i in range(len(val)):
        assert np.all(np.diff(val[i].frames.numpy()) == 2)
    with pytest.raises(InputError, match="frame_step_max"):
        SequenceDataset([small_seq], window=3, frame_step=3, frame_step_max=2)
    with pytest.raises(InputError, match="reverse"):
        AugmentConfig(reverse=1.5)


def _check_geometry(s, seq, frames, atol_px):
    """Landmarks projected with the sample's K and poses land on the sample's uv; the images
    show at those uv what the stored images show at the stored uv."""
    K = s.K.double().numpy()
    T = s.cam_T_world.double().numpy()
    uv = project(K, transform(T[:, None], seq.landmark_xyz[None])[:, 0])
    vis = s.visible.numpy()
    assert vis.sum() > 500
    np.testing.assert_allclose(uv[vis], s.uv.double().numpy()[vis], atol=atol_px)
    return K, vis


def test_resize_keeps_geometry(small_seq):
    seq = load_sequence(small_seq)
    ds = SequenceDataset(small_seq, image_size=(96, 64), dtype=torch.float64)
    s = ds[0]
    assert s.images.shape == (8, 3, 96, 64)
    K, _ = _check_geometry(s, seq, range(8), 1e-9)
    np.testing.assert_allclose(K[0, 0], 170 * 64 / 128)
    np.testing.assert_allclose(K[0, 2], (63.5 + 0.5) * 0.5 - 0.5)
    A = resize_affine((128, 128), (96, 64))
    np.testing.assert_allclose(A @ np.array([127.5, 127.5, 1]), [63.5, 95.5, 1])


def test_augmentation_is_sequence_consistent(small_seq):
    seq = load_sequence(small_seq)
    aug = AugmentConfig(brightness=0.0, contrast=0.0, saturation=0.0, scale=(1.15, 1.2), shift=6.0)
    ds = SequenceDataset(small_seq, augment=aug, seed=3, dtype=torch.float64)
    s = ds[0]
    K, vis = _check_geometry(s, seq, range(8), 1e-9)
    assert abs(K[0, 0] / 170 - 1.175) < 0.03  # the zoom went into K
    # image content follows the landmarks: augmented image at augmented uv == stored image
    # at stored uv (both bilinear), for every frame
    diffs = []
    for i in range(8):
        v = vis[i]
        a = _bilinear(s.images[i].numpy(), s.uv[i].numpy()[v])
        b = _bilinear(seq.image(i).transpose(2, 0, 1) / 255.0, seq.uv[i, v])
        diffs.append(np.abs(a - b).mean())
        # depth keeps camera-frame z, resampled nearest: output pixel p holds the stored
        # depth at the pixel nearest to A^-1 p (A = K_aug K^-1), exactly
        A = K @ np.linalg.inv(seq.K)
        vv, uu = np.mgrid[0:128, 0:128].astype(np.float64)
        src = np.linalg.solve(A, np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size)]))[:2]
        frac = np.abs(src - np.floor(src) - 0.5)
        ij = np.round(src).astype(int)
        ok = (frac > 1e-3).all(0) & (ij >= 0).all(0) & (ij <= 127).all(0)
        assert ok.mean() > 0.7
        stored = seq.depth(i)[ij[1, ok], ij[0, ok]]
        np.testing.assert_array_equal(s.depth[i, 0].numpy().ravel()[ok], stored)
    assert max(diffs) < 0.03
    # the same draw for every frame: one K; a fresh epoch draws another; seeded
    assert not torch.equal(ds[0].K, SequenceDataset(small_seq, augment=aug, seed=4)[0].K.double())
    ds.set_epoch(1)
    assert not torch.equal(ds[0].K, s.K)
    ds.set_epoch(0)
    assert torch.equal(ds[0].images, s.images)


def test_colour_jitter_is_the_same_for_all_frames(small_seq):
    aug = AugmentConfig(brightness=0.3, contrast=0.3, saturation=0.3, scale=(1, 1), shift=0)
    plain = SequenceDataset(small_seq, window=4)[1]
    s = SequenceDataset(small_seq, window=4, augment=aug, seed=9)[1]
    torch.testing.assert_close(s.K, plain.K)
    torch.testing.assert_close(s.uv, plain.uv)
    # one affine colour map for all frames: fit it on frame 0, it predicts frame 3
    x0 = plain.images[0].reshape(3, -1).T.numpy()
    y0 = s.images[0].reshape(3, -1).T.numpy()
    ok0 = ((y0 > 0.01) & (y0 < 0.99)).all(1)
    M, *_ = np.linalg.lstsq(np.c_[x0[ok0], np.ones(ok0.sum())], y0[ok0], rcond=None)
    assert np.abs(np.c_[x0[ok0], np.ones(ok0.sum())] @ M - y0[ok0]).max() < 1e-4
    x3 = plain.images[3].reshape(3, -1).T.numpy()
    y3 = s.images[3].reshape(3, -1).T.numpy()
    ok3 = ((y3 > 0.01) & (y3 < 0.99)).all(1)
    assert np.abs(np.c_[x3[ok3], np.ones(ok3.sum())] @ M - y3[ok3]).max() < 1e-4
    assert np.abs(y3[ok3] - x3[ok3]).mean() > 0.01  # and it did change the colours


def test_bad_dataset_input(tmp_path, small_seq):
    with pytest.raises(InputError, match="not found"):
        SequenceDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no facesfm sequences"):
        SequenceDataset(tmp_path / "empty")
    with pytest.raises(InputError, match="landmarks=900"):
        SequenceDataset(small_seq, landmarks=900)
    with pytest.raises(InputError, match="window=9"):
        SequenceDataset(small_seq, window=9)


def test_face_crop_keeps_geometry_and_frames_the_face(small_seq):
    seq = load_sequence(small_seq)
    aug = AugmentConfig(brightness=0.0, contrast=0.0, saturation=0.0, face_crop=1.0,
                        crop_margin=(1.2, 1.3), crop_jitter=0.05)
    ds = SequenceDataset(small_seq, window=1, image_size=64, augment=aug, seed=5,
                         dtype=torch.float64)
    for i in (0, 4, 7):
        s = ds[i]
        # landmarks projected with the crop's K and the pose land on the crop's uv
        K = s.K.double().numpy()
        T = s.cam_T_world.double().numpy()
        uv = project(K, transform(T[:, None], seq.landmark_xyz[None])[:, 0])
        vis = s.visible.numpy()
        assert vis.sum() > 300  # one frame of a 128 px sequence: 360+ visible of 800
        np.testing.assert_allclose(uv[vis], s.uv.double().numpy()[vis], atol=1e-9)
        # the crop zooms in: the stored visible landmarks' box spans 1/1.3..1/1.2 of the crop
        # (up to the centre jitter), so the face fills most of it
        ext = (s.uv[0][s.visible[0]].max(0).values - s.uv[0][s.visible[0]].min(0).values).max()
        assert 64 / 1.3 - 1e-6 <= ext <= 64 / 1.2 + 1e-6
        stored = seq.uv[i][seq.visible[i]]
        assert K[0, 0] / seq.K[0, 0] > 64 / (1.3 * (stored.max(0) - stored.min(0)).max()) - 1e-9
        # the image content moved with the landmarks (bilinear both sides, like above)
        a = _bilinear(s.images[0].numpy(), s.uv[0].numpy()[vis[0]])
        b = _bilinear(seq.image(i).transpose(2, 0, 1) / 255.0, seq.uv[i, vis[0]])
        assert np.abs(a - b).mean() < 0.03
    # face_crop 0 draws exactly what it drew before the option existed
    plain = AugmentConfig(brightness=0.0, contrast=0.0, saturation=0.0)
    a = SequenceDataset(small_seq, window=1, augment=plain, seed=5)[2]
    b = SequenceDataset(small_seq, window=1, augment=AugmentConfig(
        brightness=0.0, contrast=0.0, saturation=0.0, face_crop=0.0), seed=5)[2]
    assert torch.equal(a.images, b.images) and torch.equal(a.K, b.K)
    with pytest.raises(InputError, match="face_crop"):
        AugmentConfig(face_crop=1.5)
