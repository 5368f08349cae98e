"""torch Dataset over facesfm sequences: whole sequences or windows of consecutive frames,
optionally resized and augmented *consistently across the frames of one sample*.

Geometry stays exact under resizing and augmentation: every image-space change is a
similarity ``u' = s * u + t`` in OpenCV pixel coordinates (pixel centre of column c at u=c),
applied to the images (bilinear), depth and mask (nearest), to the landmark uv, and to K
(``K' = A K`` with ``A = [[s, 0, tx], [0, s, ty], [0, 0, 1]]``), so a landmark projected with
the sample's K and cam_T_world lands on the sample's uv. Depth values (camera-frame z) do not
change under a change of intrinsics. Colour jitter (brightness, contrast, saturation) uses
the same factors for every frame of a sample, so photometric consistency between frames holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facesfm.data.format import Sequence, load_sequence
from facesfm.errors import InputError
from facesfm.geometry.warp import affine_resample, crop_affine, resize_affine
from facesfm.io import write_json

__all__ = [
    "AugmentConfig",
    "SequenceDataset",
    "SequenceSample",
    "collate_samples",
    "find_sequences",
    "merge_datasets",
    "resize_affine",
]


@dataclass(frozen=True)
class AugmentConfig:
    """Sequence-consistent augmentation, one draw per sample.

    brightness: multiply by a factor in [1 - b, 1 + b].
    contrast:   scale around mid-grey 0.5 by a factor in [1 - c, 1 + c].
    saturation: blend with the grey image by a factor in [1 - s, 1 + s].
    scale:      (low, high) zoom about the image centre.
    shift:      max translation in pixels (uniform in [-shift, shift] per axis).
    face_crop:  probability that a sample is a square face crop instead of the whole frame
                (for a detector that refines its landmarks in a crop, see
                :func:`facesfm.networks.detect_landmarks`): the box is centred on the visible
                landmarks' bounding box, its side ``crop_margin`` times the box's longer side,
                drawn from the ``(low, high)`` range, with the centre moved by up to
                ``crop_jitter`` times the side; the crop is resampled from the stored
                full-resolution frames. 0 (default) never crops.
    reverse:    probability that a window's frames come in reverse order (the camera moves
                the other way), so a pose network cannot learn one direction of motion.
    """

    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = 8.0
    face_crop: float = 0.0
    crop_margin: tuple[float, float] = (1.1, 1.45)
    crop_jitter: float = 0.08
    reverse: float = 0.0

    def __post_init__(self):
        if not 0 <= self.reverse <= 1:
            raise InputError(f"augment.reverse must be in [0, 1], got {self.reverse}")
        for k in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, k) < 1:
                raise InputError(f"augment.{k} must be in [0, 1), got {getattr(self, k)}")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise InputError(f"augment.scale must be (low, high) > 0, got {self.scale}")
        if self.shift < 0:
            raise InputError(f"augment.shift must be >= 0, got {self.shift}")
        if not 0 <= self.face_crop <= 1:
            raise InputError(f"augment.face_crop must be in [0, 1], got {self.face_crop}")
        if len(self.crop_margin) != 2 or not 0 < self.crop_margin[0] <= self.crop_margin[1]:
            raise InputError(f"augment.crop_margin must be (low, high) > 0, got "
                             f"{self.crop_margin}")
        if not 0 <= self.crop_jitter < 0.5:
            raise InputError(f"augment.crop_jitter must be in [0, 0.5), got {self.crop_jitter}")


@dataclass
class SequenceSample:
    """One sample: F consecutive frames of one sequence, N landmarks.

    images:      (F, 3, H, W) float in [0, 1].
    depth:       (F, 1, H, W) float camera-frame z in mm, 0 = background.
    mask:        (F, 1, H, W) bool face-region mask.
    K:           (3, 3) intrinsics of these images (resizing and augmentation applied).
    cam_T_world: (F, 4, 4) camera-from-world poses (mm).
    uv:          (F, N, 2) landmark pixels (OpenCV convention).
    visible:     (F, N) bool (inside the image after augmentation and visible when rendered).
    xyz:         (N, 3) landmark world positions in mm.
    frames:      (F,) int64 positions of the frames in their sequence.
    name:        the sequence folder name.
    """

    images: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    K: torch.Tensor
    cam_T_world: torch.Tensor
    uv: torch.Tensor
    visible: torch.Tensor
    xyz: torch.Tensor
    frames: torch.Tensor
    name: str


def collate_samples(samples: list[SequenceSample]) -> SequenceSample:
    """Stack samples of equal shape along a new leading batch axis (names become a list)."""
    out = {}
    for f in fields(SequenceSample):
        vals = [getattr(s, f.name) for s in samples]
        out[f.name] = vals if f.name == "name" else torch.stack(vals)
    return SequenceSample(**out)


def find_sequences(root_or_paths) -> list[Path]:
    """Sequence folders from: a folder with dataset.json (its list), a sequence folder, a
    folder whose sub-folders are sequences, or a list of any of these."""
    if isinstance(root_or_paths, (list, tuple)):
        out = []
        for p in root_or_paths:
            out.extend(find_sequences(p))
        return out
    root = Path(root_or_paths)
    if not root.exists():
        raise InputError(f"dataset path not found: {root}")
    if not root.is_dir():
        raise InputError(f"{root} is a file; give a sequence folder or a dataset folder")
    if (root / "sequence.json").is_file():
        return [root]
    if (root / "dataset.json").is_file():
        try:
            entries = json.loads((root / "dataset.json").read_text())["sequences"]
            return [root / e["path"] for e in entries]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(f"{root / 'dataset.json'}: malformed ({e})") from None
    subs = sorted(p for p in root.iterdir() if (p / "sequence.json").is_file())
    if not subs:
        raise InputError(f"no facesfm sequences in {root} (no sequence.json or dataset.json)")
    return subs


def _label_rule(render: dict | None) -> tuple | None:
    """The settings that decide a rendered set's visibility labels, (occlusion,
    depth_tolerance, facing_radius) (a set rendered before ``facing_radius`` existed used
    vertex normals, i.e. 0); None when unknown (a hand-made index)."""
    if not render:
        return None
    return (render.get("occlusion", "front"), float(render.get("depth_tolerance", 2.0)),
            float(render.get("facing_radius", 0.0)))


def label_rule(folder) -> dict | None:
    """How the visibility labels of a dataset folder (``facesfm render`` or ``facesfm merge``)
    were made: {"occlusion", "depth_tolerance", "facing_radius"}, or None when its index does
    not say."""
    index = Path(folder) / "dataset.json"
    try:
        cfg = json.loads(index.read_text()).get("config", {})
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{index}: cannot read it ({e})") from None
    renders = [p.get("render") for p in cfg["parts"]] if "parts" in cfg else [cfg.get("render")]
    rules = {_label_rule(r) for r in renders} - {None}
    if len(rules) > 1:  # merge refuses this; a hand-edited index could still hold it
        raise InputError(f"{index}: its parts label visibility with different rules {rules}")
    if not rules:
        return None
    return dict(zip(("occlusion", "depth_tolerance", "facing_radius"), rules.pop(), strict=True))


def merge_datasets(out, inputs) -> dict:
    """Write ``out/dataset.json`` listing the sequences of several rendered folders (each with
    its own dataset.json), so that one training run reads them all; nothing is copied. The
    entries point at the sequences by absolute path, their names get the source folder's name
    as a prefix, and ``config.parts`` records each source (folder, master seed, faces). Refuses
    a folder given twice, a face (face seed) present in two sources, and an ``out`` that
    already has a dataset.json or a sequence. Returns the written index."""
    out = Path(out)
    srcs = [Path(p).resolve() for p in inputs]
    if len(srcs) < 2:
        raise InputError("merge needs at least two dataset folders")
    if len(set(srcs)) != len(srcs):
        raise InputError("merge: a dataset folder is given twice")
    if (out / "dataset.json").exists() or (out / "sequence.json").exists():
        raise InputError(f"{out} already holds a dataset; choose a new folder")
    entries, parts, seen = [], [], {}
    for src in srcs:
        index = src / "dataset.json"
        if not index.is_file():
            raise InputError(f"{src}: no dataset.json (merge takes folders written by "
                             f"facesfm render or facesfm merge)")
        try:
            d = json.loads(index.read_text())
            seqs = d["sequences"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(f"{index}: malformed ({e})") from None
        for e in seqs:
            fs = e.get("face_seed")
            if fs is not None:
                if fs in seen and seen[fs] != src:
                    raise InputError(f"face seed {fs} is in both {seen[fs]} and {src}: the "
                                     f"same face would be counted twice")
                seen[fs] = src
            path = (src / e["path"]).resolve()
            if not (path / "sequence.json").is_file():
                raise InputError(f"{index} lists {path}, which is not a sequence folder")
            entries.append({**e, "name": f"{src.name}/{e['name']}", "path": str(path)})
        cfg = d.get("config", {})
        parts.append({"folder": str(src), "seed": cfg.get("seed"),
                      "sequences": len(seqs),
                      "subjects": len({e.get("face_seed", e["name"]) for e in seqs}),
                      "render": cfg.get("render")})
    rules = {src: _label_rule(p["render"]) for src, p in zip(srcs, parts, strict=True)}
    if len({r for r in rules.values() if r is not None}) > 1:
        raise InputError("merge: the folders label visibility with different rules "
                         "(occlusion, depth_tolerance, facing_radius): "
                         + "; ".join(f"{s}: {r}" for s, r in rules.items() if r is not None)
                         + ". A detector trained on the merge would learn both; re-render "
                           "one of them with the other's rule.")
    index = {"format": "facesfm-dataset", "version": 1, "sequences": entries,
             "config": {"parts": parts}}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "dataset.json", index)
    return index


class SequenceDataset(torch.utils.data.Dataset):
    """Samples of facesfm sequences as :class:`SequenceSample`.

    root_or_paths: see :func:`find_sequences`.
    window:        frames per sample (None: whole sequences, one sample each).
    stride:        step between window starts (default: ``window`` x ``frame_step``, no
                   overlap).
    frame_step:    take every k-th frame inside a window (a window of 5 at step 4 spans 16
                   frames): wider baselines for the stage-2 losses.
    frame_step_max: with ``augment``, each sample draws its step uniformly from
                   ``frame_step..frame_step_max`` (varied motion per step); windows are placed
                   so that the longest span fits; unaugmented samples use ``frame_step``.
    image_size:    output (H, W) or int (square); None keeps the stored size.
    augment:       :class:`AugmentConfig` or None.
    landmarks:     use landmark IDs 0..N-1 (N <= the stored count; None: all stored).
    seed:          augmentation seed; sample i of epoch e draws from (seed, e, i).
    load_depth, load_mask: skip reading those files when False (zeros are returned).
    dtype:         floating dtype of the tensors (default float32).
    """

    def __init__(self, root_or_paths, window: int | None = None, stride: int | None = None,
                 image_size=None, *, frame_step: int = 1, frame_step_max: int | None = None,
                 augment: AugmentConfig | None = None,
                 landmarks: int | None = None, seed: int = 0, load_depth: bool = True,
                 load_mask: bool = True, dtype: torch.dtype = torch.float32):
        self.sequences: list[Sequence] = [load_sequence(p) for p in
                                          find_sequences(root_or_paths)]
        if window is not None and window < 1:
            raise InputError(f"window must be >= 1, got {window}")
        if frame_step < 1:
            raise InputError(f"frame_step must be >= 1, got {frame_step}")
        if frame_step_max is not None and frame_step_max < frame_step:
            raise InputError(f"frame_step_max ({frame_step_max}) must be >= frame_step "
                             f"({frame_step})")
        self.window = window
        self.frame_step = int(frame_step)
        self.frame_step_max = int(frame_step_max or frame_step)
        self.stride = stride or (window * self.frame_step if window else 1)
        if self.stride < 1:
            raise InputError(f"stride must be >= 1, got {stride}")
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.image_size = None if image_size is None else tuple(int(s) for s in image_size)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.load_depth = load_depth
        self.load_mask = load_mask
        self.dtype = dtype
        stored = min(len(s.landmark_ids) for s in self.sequences)
        if landmarks is not None and landmarks > stored:
            raise InputError(f"landmarks={landmarks}: the sequences store only {stored}")
        self.landmarks = landmarks or stored
        self.index: list[tuple[int, int, int]] = []  # (sequence, start, length)
        k = self.frame_step
        k_max = self.frame_step_max
        for si, s in enumerate(self.sequences):
            n = len(s)
            if window is None:
                self.index.append((si, 0, (n - 1) // k + 1))
            else:
                span = (window - 1) * k_max + 1
                self.index.extend((si, st, window) for st in range(0, n - span + 1,
                                                                   self.stride))
        if not self.index:
            raise InputError(
                f"no sample fits window={window} (frame_step={k_max}) in the given sequences"
            )

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh augmentations (deterministically) for a new epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> SequenceSample:
        si, start, length = self.index[i]
        seq = self.sequences[si]
        step = self.frame_step
        reverse = False
        if self.augment is not None and self.window is not None:
            # its own stream: the other augmentations draw what they drew before
            motion = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, i, 1])
            step = int(motion.integers(self.frame_step, self.frame_step_max + 1))
            reverse = bool(motion.uniform() < self.augment.reverse)
        fr = start + step * np.arange(length)
        if reverse:
            fr = fr[::-1].copy()
        N = self.landmarks
        H, W = seq.height, seq.width
        out_hw = self.image_size or (H, W)
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, i])

        A = resize_affine((H, W), out_hw)
        crop = self.augment is not None and self.augment.face_crop > 0 and \
            rng.uniform() < self.augment.face_crop
        if crop:
            a = self.augment
            vis = seq.visible[fr, :N]
            pts = seq.uv[fr, :N][vis]
            if len(pts) < 2:  # no face to crop around: the whole frame
                crop = False
            else:
                lo, hi = pts.min(0), pts.max(0)
                side = rng.uniform(*a.crop_margin) * float((hi - lo).max())
                centre = (lo + hi) / 2 + rng.uniform(-a.crop_jitter, a.crop_jitter, 2) * side
                A = crop_affine(centre, side, out_hw)
        if self.augment is not None and not crop:
            a = self.augment
            s = rng.uniform(*a.scale)
            t = rng.uniform(-a.shift, a.shift, 2)
            c = np.array([(out_hw[1] - 1) / 2, (out_hw[0] - 1) / 2])
            # zoom by s about the image centre, then shift by t
            Z = np.array([[s, 0, (1 - s) * c[0] + t[0]], [0, s, (1 - s) * c[1] + t[1]],
                          [0, 0, 1.0]])
            A = Z @ A
        geometric = not np.allclose(A, np.eye(3))

        dt = self.dtype
        imgs = torch.from_numpy(np.stack([seq.image(j) for j in fr])).permute(0, 3, 1, 2)
        imgs = imgs.to(dt) / 255.0
        depth = torch.from_numpy(np.stack([seq.depth(j) for j in fr])[:, None]).to(dt) \
            if self.load_depth else torch.zeros(length, 1, H, W, dtype=dt)
        mask = torch.from_numpy(np.stack([seq.mask(j) for j in fr])[:, None]).to(dt) \
            if self.load_mask else torch.zeros(length, 1, H, W, dtype=dt)
        if geometric and self.augment is None:
            # a plain resize: interpolate's align_corners=False is the same pixel-centre map
            # as resize_affine, and antialiasing avoids aliasing when shrinking
            imgs = F.interpolate(imgs, size=out_hw, mode="bilinear", align_corners=False,
                                 antialias=True)
            depth = F.interpolate(depth, size=out_hw, mode="nearest-exact")
            mask = F.interpolate(mask, size=out_hw, mode="nearest-exact")
        elif geometric:
            imgs = affine_resample(imgs, A, out_hw, "bilinear")
            depth = affine_resample(depth, A, out_hw, "nearest")
            mask = affine_resample(mask, A, out_hw, "nearest")
        if self.augment is not None:
            a = self.augment
            b = rng.uniform(1 - a.brightness, 1 + a.brightness)
            k = rng.uniform(1 - a.contrast, 1 + a.contrast)
            sat = rng.uniform(1 - a.saturation, 1 + a.saturation)
            grey = (0.299 * imgs[:, 0:1] + 0.587 * imgs[:, 1:2] + 0.114 * imgs[:, 2:3])
            imgs = grey + sat * (imgs - grey)
            imgs = (imgs * b - 0.5) * k + 0.5
            imgs = imgs.clamp(0.0, 1.0)

        uv = seq.uv[fr, :N]
        uv = uv @ A[:2, :2].T + A[:2, 2]
        vis = seq.visible[fr, :N].copy()
        if geometric:
            h2, w2 = out_hw
            vis &= (uv[..., 0] >= 0) & (uv[..., 0] <= w2 - 1) & (uv[..., 1] >= 0) & \
                (uv[..., 1] <= h2 - 1)
        return SequenceSample(
            images=imgs.contiguous(),
            depth=depth.contiguous(),
            mask=mask > 0.5,
            K=torch.from_numpy(A @ seq.K).to(dt),
            cam_T_world=torch.from_numpy(seq.cam_T_world[fr]).to(dt),
            uv=torch.from_numpy(uv).to(dt),
            visible=torch.from_numpy(vis),
            xyz=torch.from_numpy(seq.landmark_xyz[:N]).to(dt),
            frames=torch.from_numpy(fr.astype(np.int64)),
            name=seq.root.name,
        )
