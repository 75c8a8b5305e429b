from __future__ import annotations

import pytest

from advisor.sandbox_support import make_job


@pytest.fixture
def job(tmp_path):
    """A fresh working folder, one CSV input, and a function running a script text on them."""
    return make_job(tmp_path)
