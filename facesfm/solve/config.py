"""Options of ``facesfm solve``: :class:`SolveConfig` (its stages' sources, the BA, tracks,
stereo and fusion settings), the named presets :data:`SOLVE_PRESETS` and
:func:`build_solve_config` (defaults, a preset, a YAML file, command-line options, then
dotted ``--set`` overrides).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from facesfm.config import dotted_overrides, from_dict, merge, read_yaml, to_dict
from facesfm.errors import InputError
from facesfm.solve.fusion import FusionConfig
from facesfm.solve.stereo import StereoConfig
from facesfm.solve.tracks import TrackConfig
from facesfm.solvers.focal import FocalConfig
from facesfm.solvers.landmark_ba import BAConfig

__all__ = ["DEPTH_SOURCES", "FACE_CROPS", "LANDMARK_SOURCES", "POSE_INITS", "SOLVE_PRESETS",
           "SolveConfig", "build_solve_config", "with_settings"]

POSE_INITS = ("network", "gt", "gt-perturbed", "landmarks")
DEPTH_SOURCES = ("network", "oracle", "landmarks")
FACE_CROPS = ("auto", "on", "off")
LANDMARK_SOURCES = ("detector", "mediapipe", "oracle")

# Named solve settings (``--preset``), as nested overrides of the defaults. Figures: 20
# held-out ICT faces, 61 frames at 384x384 (docs/results.md), and one built-in face on 2 CPU
# cores (bench/results/solve.md).
SOLVE_PRESETS: dict[str, dict] = {
    # the detector alone: a factorisation of its landmark tracks, the BA, depth maps
    # interpolated from the adjusted landmarks (2.08 deg, cloud 1.87 mm; 9 s)
    "fast": {"poses_init": "landmarks", "depth": "landmarks"},
    # the same, then photometric point tracks in a second BA and a plane sweep of the depth
    # maps (0.26 deg, cloud 0.35 mm; 12-18 s)
    "accurate": {"poses_init": "landmarks", "depth": "landmarks",
                 "tracks": {"enabled": True}, "stereo": {"enabled": True}},
}


@dataclass(frozen=True)
class SolveConfig:
    """Options of ``facesfm solve``.

    checkpoint:        stage-2 ("sfm") training checkpoint: depth and pose networks
                       (:mod:`facesfm.solve.learned`); needed unless depth and poses are oracle.
    landmark_checkpoint: stage-1 ("landmarks") training checkpoint; needed unless
                       ``oracle_landmarks`` (default: the one recorded in ``checkpoint``).
    landmarks_from:    where the landmarks come from: "detector" (our landmark CNN,
                       ``landmark_checkpoint``), "mediapipe" (the 432 inner points of
                       MediaPipe's face mesh, seen where the mesh faces the camera:
                       :func:`facesfm.solve.frontend.mediapipe_landmarks`; no detector needed)
                       or "oracle" (the sequence's landmarks.npz; sequence input only). None:
                       "oracle" if ``oracle_landmarks`` else "detector".
    oracle_landmarks:  the same as ``landmarks_from="oracle"`` (kept in step with it).
    depth:             where the depth maps come from: "network" (DepthNet of ``checkpoint``),
                       "oracle" (GT depth maps and masks; sequence input only; an analysis
                       switch) or "landmarks" (interpolated from the bundle-adjusted landmark
                       points, masks = landmark hulls; no depth network; needs the "classical"
                       BA parameterisation). None: "oracle" if ``oracle_depth`` else "network".
    oracle_depth:      the same as ``depth="oracle"`` (kept in step with ``depth``).
    poses_init:        "network", "landmarks" (Tomasi-Kanade factorisation of the landmark
                       tracks, weak-perspective poses scaled to about mm by the mean-face
                       template; frames it cannot place are skipped; with the BA on it also
                       runs from :func:`template_poses` and keeps the lower cost), "gt" or
                       "gt-perturbed" (GT
                       poses moved by a random rotation of ``perturb_rot_deg`` and translation
                       of ``perturb_trans_mm`` per frame, except the first, seeded by
                       ``perturb_seed``).
    landmarks:         use landmark IDs 0..landmarks-1 (None: all the source has).
    min_face_landmarks: a frame with fewer observed landmarks has no face: skipped.
    min_relative_confidence: a frame whose detected landmarks' mean BA weight (the detector's
                       confidence) is below this share of the median frame's has no face
                       (:func:`facesfm.solve.stages.select_face_frames`): skipped.
    min_frames:        fewer usable frames than this is an error.
    face_crop:         find the face in each frame (MediaPipe), skip frames without one and
                       crop the frames to it (:mod:`facesfm.solve.frontend`): "on", "off",
                       or "auto" (on for photo folders and videos, off for sequence folders,
                       whose frames are framed already and whose ground truth is in their
                       pixels).
    crop_size:         side in px of the square crop the frames are resampled to.
    person_mask:       intersect every depth map's mask (the landmark hull, or the network
                       depth's) with MediaPipe's selfie segmentation of the person, so that the
                       background a convex hull takes in (between nose and chin in a profile)
                       stays out of the tracks, the plane sweep and the cloud
                       (:func:`facesfm.solve.frontend.person_masks`): "on", "off", or "auto"
                       (as ``face_crop``: on for photo folders and videos).
    keyframe_deg, max_frames: a video is solved from keyframes: a new one each time the head
                       has turned ``keyframe_deg`` more (MediaPipe's face meshes; 0: every
                       frame), at most ``max_frames`` of them, evenly spread
                       (:func:`facesfm.solve.frontend.keyframes`).
    joint_frames:      with more usable frames than this, the bundle adjustment, tracks, plane
                       sweep and fusion run on this many keyframes evenly spread over them,
                       and every other frame is registered to their reconstruction (its pose
                       alone fitted to its landmarks and to skin patches matched from the
                       neighbouring keyframes: :mod:`facesfm.solve.register`). None: all
                       frames take part in every stage. The tracks' and the plane sweep's
                       defaults were set on 61 frames 2 degrees apart: on the 601-frame
                       built-in sweep, 61 keyframes gave 0.30 deg in 39 s and 121 gave 0.45
                       deg in 59 s (all frames in the joint stages: 2.06 deg in 625 s).
    face_agreement:    with the front end: a frame whose semantic landmarks lie further than
                       this share of the face's size (box diagonal) from the face MediaPipe
                       found is skipped. Median agreement of the shipped detectors on our
                       renders: 0.9-2.0%, on a real photograph (cropped) 3.1-3.3%.
    motion_check:      compare the cameras' rotations with the head's turning that MediaPipe's
                       face meshes show (:func:`facesfm.solve.frontend.motion_agreement`):
                       "on", "off", or "auto" (wherever MediaPipe is installed). Photo folders
                       and videos reuse the front end's meshes; a sequence folder's are found
                       on at most ``motion_check_frames`` of its frames, evenly spread.
    max_motion_disagreement_deg, min_mesh_faces, face_extent_mm, max_face_shape_mm: the
                       whole-solve checks
                       (:func:`facesfm.solve.checks.check_result`); a solve that fails one is
                       an error and writes nothing, unless ``keep_unreliable``: then it is
                       written and marked ``status: unreliable`` in report.json.
    evaluate:          with GT (sequence input): pose errors and cloud/mesh accuracy.
    evaluate_now:      with ``evaluate``: also the mesh's errors under the NoW benchmark's
                       protocol (:mod:`facesfm.eval.now`; about 2-4 s more).
    ba, fusion:        :class:`BAConfig`, :class:`FusionConfig`.
    tracks:            :class:`TrackConfig`: photometric point tracks re-run the classical BA
                       with the landmarks (``--tracks``).
    stereo:            :class:`StereoConfig`: photometric refinement of the depth maps before
                       fusion (``--stereo``).
    focal:             :class:`FocalConfig`: where K is only the default guess, one focal
                       length for all frames is estimated from photometric point tracks
                       (:mod:`facesfm.solvers.focal`).
    """

    checkpoint: str | None = None
    landmark_checkpoint: str | None = None
    landmarks_from: str | None = None
    oracle_landmarks: bool = False
    oracle_depth: bool = False
    depth: str | None = None
    poses_init: str = "network"
    perturb_rot_deg: float = 3.0
    perturb_trans_mm: float = 10.0
    perturb_seed: int = 0
    landmarks: int | None = None
    min_face_landmarks: int = 8
    min_relative_confidence: float = 0.3
    min_frames: int = 2
    face_crop: str = "auto"
    crop_size: int = 384
    person_mask: str = "auto"
    face_agreement: float = 0.08
    keyframe_deg: float = 2.0
    max_frames: int | None = 150
    joint_frames: int | None = 61
    motion_check: str = "auto"
    motion_check_frames: int = 16
    max_motion_disagreement_deg: float = 10.0
    min_mesh_faces: int = 100
    face_extent_mm: tuple[float, float] = (40.0, 800.0)
    max_face_shape_mm: float = 15.0
    keep_unreliable: bool = False
    device: str = "cpu"
    evaluate: bool = True
    evaluate_now: bool = False
    ba: BAConfig = field(default_factory=BAConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    stereo: StereoConfig = field(default_factory=StereoConfig)
    tracks: TrackConfig = field(default_factory=TrackConfig)
    focal: FocalConfig = field(default_factory=FocalConfig)

    def __post_init__(self):
        if not self.ba.float64:
            raise InputError("ba.float64 is the training layer's setting: the solve works in "
                             "float64 always")
        if self.tracks.enabled and not (self.ba.enabled and self.ba.classical):
            raise InputError("--tracks adds photometric tracks to the classical bundle "
                             "adjustment: it needs the BA on and --ba-parameterization "
                             "classical")
        if self.poses_init not in POSE_INITS:
            raise InputError(f"--poses-init {self.poses_init}: choose one of {list(POSE_INITS)}")
        if self.depth is not None and self.depth not in DEPTH_SOURCES:
            raise InputError(f"--depth {self.depth}: choose one of {list(DEPTH_SOURCES)}")
        if self.oracle_depth and self.depth not in (None, "oracle"):
            raise InputError(f"--oracle-depth and --depth {self.depth} disagree")
        if self.landmarks_from is not None and self.landmarks_from not in LANDMARK_SOURCES:
            raise InputError(f"--landmarks-from {self.landmarks_from}: choose one of "
                             f"{list(LANDMARK_SOURCES)}")
        if self.oracle_landmarks and self.landmarks_from not in (None, "oracle"):
            raise InputError(f"--oracle-landmarks and --landmarks-from {self.landmarks_from} "
                             f"disagree")
        source = self.landmarks_from or ("oracle" if self.oracle_landmarks else "detector")
        object.__setattr__(self, "landmarks_from", source)
        object.__setattr__(self, "oracle_landmarks", source == "oracle")
        if source == "mediapipe" and self.landmarks is not None:
            raise InputError("--landmarks N counts the IDs of our landmark sets; "
                             "--landmarks-from mediapipe uses the face mesh's own points")
        depth = self.depth or ("oracle" if self.oracle_depth else "network")
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "oracle_depth", depth == "oracle")
        if depth == "landmarks" and self.ba.enabled and not self.ba.classical:
            raise InputError("--depth landmarks builds the depth maps from the BA's landmark "
                             "points: it needs --ba-parameterization classical")
        if depth == "landmarks" and self.landmarks is not None and self.landmarks < 4:
            raise InputError(f"--depth landmarks needs >= 4 landmarks (depth maps are "
                             f"interpolated between them), got --landmarks {self.landmarks}")
        if self.face_crop not in FACE_CROPS:
            raise InputError(f"--face-crop {self.face_crop}: choose one of {list(FACE_CROPS)}")
        if self.person_mask not in FACE_CROPS:
            raise InputError(f"--person-mask {self.person_mask}: choose one of "
                             f"{list(FACE_CROPS)}")
        if self.motion_check not in FACE_CROPS:
            raise InputError(f"motion_check {self.motion_check}: choose one of "
                             f"{list(FACE_CROPS)}")
        if self.motion_check_frames < 3:
            raise InputError(f"motion_check_frames must be >= 3, got "
                             f"{self.motion_check_frames}")
        if not self.max_face_shape_mm > 0:
            raise InputError(f"max_face_shape_mm must be > 0, got {self.max_face_shape_mm}")
        if not (self.max_motion_disagreement_deg > 0 and self.min_mesh_faces >= 0
                and 0 <= self.face_extent_mm[0] < self.face_extent_mm[1]):
            raise InputError("max_motion_disagreement_deg must be > 0, min_mesh_faces >= 0 "
                             "and face_extent_mm (lo, hi) with 0 <= lo < hi")
        if not 0 < self.face_agreement < 1:
            raise InputError(f"face_agreement must be in (0, 1), got {self.face_agreement}")
        if self.keyframe_deg < 0 or (self.max_frames is not None and self.max_frames < 2):
            raise InputError("keyframe_deg must be >= 0 and max_frames >= 2")
        if self.joint_frames is not None and self.joint_frames < 2:
            raise InputError(f"joint_frames must be >= 2 (or null: all frames), got {self.joint_frames}")
        if self.crop_size < 32:
            raise InputError(f"crop_size must be >= 32 px, got {self.crop_size}")
        if not 0 <= self.min_relative_confidence < 1:
            raise InputError(f"min_relative_confidence must be in [0, 1), got "
                             f"{self.min_relative_confidence}")
        if self.min_frames < 2:
            raise InputError(f"min_frames must be >= 2, got {self.min_frames}")
        if self.landmarks is not None and self.landmarks < 1:
            raise InputError(f"--landmarks must be >= 1, got {self.landmarks}")

    @property
    def needs_sfm_networks(self) -> bool:
        return self.depth == "network" or self.poses_init == "network"

    def stage_sources(self) -> dict:
        """Where each stage's values come from (for reports and the benchmark)."""
        return {
            "faces": {"auto": "MediaPipe FaceMesh and one square crop for photo folders and "
                              "videos; none for sequence folders",
                      "on": "MediaPipe FaceMesh, one square crop",
                      "off": "none (the frames as read)"}[self.face_crop],
            "landmarks": {"oracle": "oracle (GT landmarks.npz)", "detector": "network",
                          "mediapipe": "MediaPipe FaceMesh (inner points where the mesh "
                                       "faces the camera)"}[self.landmarks_from],
            "depth": {"network": "network",
                      "oracle": "oracle (GT depth maps, masks)",
                      "landmarks": "landmarks (linear interpolation of the BA landmark points' "
                                   "depths, landmark-hull masks)"}[self.depth],
            "initial_poses": {"network": "network (PoseNet)", "gt": "oracle (GT poses)",
                              "gt-perturbed": f"oracle (GT poses perturbed by "
                              f"{self.perturb_rot_deg} deg / {self.perturb_trans_mm} mm)",
                              "landmarks": "landmarks (Tomasi-Kanade factorisation of the "
                                           "landmark tracks, weak-perspective poses, or the "
                                           "mean face's per-frame poses where the BA reaches "
                                           "a lower cost from them: see ba.start)",
                              }[self.poses_init],
            "ba": (f"LMSolver ({self.ba.parameterization.value} parameterisation)"
                   if self.ba.enabled else "off")
                  + (", then again with photometric point tracks" if self.tracks.enabled
                     else ""),
            "depth_refinement": ("photometric plane sweep (NCC) around the depth maps"
                                 if self.stereo.enabled else "none"),
        }


def build_solve_config(config=None, preset: str | None = None, sets=(),
                       **options) -> SolveConfig:
    """SolveConfig from defaults, then the named ``preset`` (:data:`SOLVE_PRESETS`), then
    the YAML file ``config``, then the command-line ``options`` that are not None/False:
    checkpoint, landmark_checkpoint, landmarks_from, oracle_landmarks,
    oracle_depth, depth, oracle_poses, poses_init, perturb "DEG,MM", seed, landmarks, ba (bool),
    ba_parameterization, mesh_method, consistent_views, tracks (bool), stereo (bool),
    face_crop, person_mask, keep_unreliable, max_frames; last the dotted ``KEY=VALUE`` items
    of ``sets`` (``--set ba.max_iterations=20``: :func:`facesfm.config.dotted_overrides`)."""
    d = to_dict(SolveConfig())
    if preset is not None:
        if preset not in SOLVE_PRESETS:
            raise InputError(f"--preset {preset}: choose one of {sorted(SOLVE_PRESETS)}")
        d = _layer(d, SOLVE_PRESETS[preset])
    if config is not None:
        raw = read_yaml(config)
        from_dict(SolveConfig, raw, str(config))  # unknown keys and bad values name the file
        d = _layer(d, raw)
    o = {k: v for k, v in options.items() if v is not None and v is not False}
    allowed = {"checkpoint", "landmark_checkpoint", "landmarks_from", "oracle_landmarks",
               "oracle_depth",
               "depth", "oracle_poses", "poses_init", "perturb", "seed", "landmarks", "ba",
               "face_crop", "person_mask", "keep_unreliable", "max_frames",
               "ba_parameterization", "mesh_method", "consistent_views", "tracks", "stereo"}
    if set(o) - allowed:
        raise TypeError(f"build_solve_config: unknown options {sorted(set(o) - allowed)}")
    for k in ("checkpoint", "landmark_checkpoint", "landmarks", "face_crop", "person_mask",
              "keep_unreliable", "max_frames"):
        if k in o:
            d[k] = str(o[k]) if k.endswith("checkpoint") else o[k]
    if o.get("oracle_landmarks") or "landmarks_from" in o:
        # the options replace the file's choice; SolveConfig refuses the two disagreeing
        d["landmarks_from"] = o.get("landmarks_from")
        d["oracle_landmarks"] = bool(o.get("oracle_landmarks"))
    if o.get("oracle_depth"):
        if o.get("depth", "oracle") != "oracle":
            raise InputError(f"--oracle-depth and --depth {o['depth']} disagree")
        d["depth"], d["oracle_depth"] = "oracle", True
    elif "depth" in o:
        d["depth"], d["oracle_depth"] = o["depth"], o["depth"] == "oracle"
    if "ba_parameterization" in o:
        d["ba"]["parameterization"] = o["ba_parameterization"]
    if o.get("oracle_poses"):
        if o.get("poses_init", "gt") != "gt":
            raise InputError(f"--oracle-poses and --poses-init {o['poses_init']} disagree")
        d["poses_init"] = "gt"
    elif "poses_init" in o:
        d["poses_init"] = o["poses_init"]
    if "perturb" in o:
        try:
            deg, mm = (float(x) for x in str(o["perturb"]).split(","))
        except ValueError:
            raise InputError(f"--perturb {o['perturb']}: expected DEG,MM, e.g. 3,10") from None
        if not (deg >= 0 and mm >= 0):
            raise InputError(f"--perturb {o['perturb']}: must be >= 0")
        d["perturb_rot_deg"], d["perturb_trans_mm"] = deg, mm
    if "seed" in o:
        d["perturb_seed"] = o["seed"]
    if "ba" in options and options["ba"] is not None:
        d["ba"]["enabled"] = bool(options["ba"])
    if "mesh_method" in o:
        d["fusion"]["mesh_method"] = o["mesh_method"]
    if "consistent_views" in o:
        d["fusion"]["consistent_views"] = o["consistent_views"]
    for k in ("tracks", "stereo"):
        if options.get(k) is not None:
            d[k]["enabled"] = bool(options[k])
    if sets:
        d = _layer(d, dotted_overrides(sets, d))
    return from_dict(SolveConfig, d, str(config) if config is not None else "options")


def with_settings(cfg: SolveConfig, sets) -> SolveConfig:
    """``cfg`` with the dotted ``KEY=VALUE`` items of ``sets`` on top, as ``--set`` applies
    them in :func:`build_solve_config` (linked pairs included)."""
    d = to_dict(cfg)
    return from_dict(SolveConfig, _layer(d, dotted_overrides(sets, d)), "--set")


# each flag and the source it stands for: a layer that sets one of them leaves the other to
# follow it (SolveConfig resolves None from the flag), so that "oracle_depth: true" in a file
# over a preset's "depth: landmarks" means oracle depth, not a disagreement
_LINKED = (("oracle_depth", "depth"), ("oracle_landmarks", "landmarks_from"))


def _layer(d: dict, over: dict) -> dict:
    """``d`` with the settings ``over`` on top (:func:`facesfm.config.merge`), where ``over``
    naming one half of a linked pair (:data:`_LINKED`) resets the other half."""
    d = dict(d)
    for flag, source in _LINKED:
        if flag in over and source not in over:
            d[source] = None
        elif source in over and flag not in over:
            d[flag] = False
    return merge(d, over)
