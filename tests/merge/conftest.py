"""Shared fixtures for the merge tests: tiny checkpoint families built in a temporary directory."""

from __future__ import annotations

import pytest

from tests.merge.checkpoints import make_family


@pytest.fixture
def family(tmp_path):
    """(base, a, b) tiny fp32 checkpoints: a pivot and two targets fine-tuned from it."""
    return make_family(tmp_path / "in", seed=7)
