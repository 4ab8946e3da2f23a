"""Where the tests find the school data: ``$TAAN_SCHOOL_MAT`` or ``../shared/data/school/school.mat``.

The project reads the file from a path and never ships it; where it is absent (a machine without
the shared data folder) the tests that need it skip and say why.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SCHOOL_MAT = Path(os.environ.get("TAAN_SCHOOL_MAT")
                  or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "school" / "school.mat")
needs_school = pytest.mark.skipif(not SCHOOL_MAT.is_file(),
                                  reason=f"the school data are not at {SCHOOL_MAT} (set TAAN_SCHOOL_MAT)")
