import numpy as np
from PIL import Image

from facesfm.data.format import load_sequence
from facesfm.render.preview import contact_sheet


def test_contact_sheet_draws_visible_landmarks_where_they_are(seq21, tmp_path):
    """Dots are drawn at the stored uv of visible landmarks: the sheet differs from the plain
    frame exactly around those points."""
    seq = load_sequence(seq21)
    out = contact_sheet(seq21, tmp_path / "p.png", n_frames=1, tile=seq.width)
    sheet = np.asarray(Image.open(out)).astype(int)
    plain = seq.image(0).astype(int)
    assert sheet.shape == plain.shape
    changed = np.abs(sheet - plain).sum(-1) > 0
    uv = np.round(seq.uv[0, seq.visible[0]]).astype(int)
    near = np.zeros_like(changed)
    for du in range(-2, 3):  # dot radius is 1.5 px at this tile size
        for dv in range(-2, 3):
            near[np.clip(uv[:, 1] + dv, 0, seq.height - 1), np.clip(uv[:, 0] + du, 0, seq.width - 1)] = True
    assert changed.any() and not (changed & ~near).any()
