"""Fixtures of the artifacts tests: a storage directory of the test's own and a running
execution to save files for."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def storage_dir(settings, tmp_path) -> Path:
    """The ``artifacts`` storage as configured by default (the file system), in a directory of
    this test's own. (End-to-end tests keep the default, under the var directory the worker
    shares.)"""
    location = tmp_path / "artifacts"
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(location)},
        },
    }
    return location


@pytest.fixture
def running(make_agent, make_execution, storage_dir):
    """Alice's function agent's execution, running its first attempt."""
    return make_execution(make_agent(name="reporter"), "running")


def stored_files(location: Path) -> list[Path]:
    return sorted(p for p in location.rglob("*") if p.is_file())
