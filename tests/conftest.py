import os

import pytest

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")


@pytest.fixture(scope="session")
def ict_dir():
    """The ICT-FaceKit FaceXModel folder, or skip naming the folder that is missing."""
    from facesfm.errors import InputError
    from facesfm.paths import default_ict_candidates, find_ict_dir

    try:
        return find_ict_dir()
    except InputError:
        where = " or ".join(str(p) for p in default_ict_candidates())
        pytest.skip(f"ICT-FaceKit folder missing: {where}")
