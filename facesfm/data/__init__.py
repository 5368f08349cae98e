"""facesfm.data: the sequence format on disk (version 1), COLMAP export, and torch Datasets
with sequence-consistent augmentation."""

from facesfm.data.format import FORMAT_VERSION, Sequence, load_sequence

__all__ = [
    "FORMAT_VERSION",
    "AugmentConfig",
    "Sequence",
    "SequenceDataset",
    "SequenceSample",
    "collate_samples",
    "load_sequence",
]


def __getattr__(name):
    # torch loads only when the Dataset is used
    if name in ("SequenceDataset", "SequenceSample", "AugmentConfig", "collate_samples"):
        from facesfm.data import dataset

        return getattr(dataset, name)
    raise AttributeError(name)
