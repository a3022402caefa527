"""Fixtures of the operators' tests."""

from __future__ import annotations

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _fresh_cache():
    """The workers panel caches its answer for a few seconds: no test sees another's."""
    cache.clear()
    yield
    cache.clear()
