"""A web process, once loaded, hides what it loaded from the cyclic garbage collector
(config/startup.py): checked in a process of its own, as gunicorn or an ASGI server starts it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.stack import ROOT

PROBE = """
import gc, sys
import {module}
print(gc.get_freeze_count(), "ops.views" in sys.modules, "api.views" in sys.modules)
"""


@pytest.mark.parametrize("module", ["config.wsgi", "config.asgi"])
def test_a_web_process_freezes_what_it_loaded_views_included(module, tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "true",
        "CONVEYOR_VAR_DIR": str(tmp_path),
    }
    env.pop("DATABASE_URL", None)
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    frozen, ops_loaded, api_loaded = int(out[0]), out[1], out[2]
    # Django and every app: far more than a bare interpreter's few thousand objects.
    assert frozen > 100_000
    assert (ops_loaded, api_loaded) == ("True", "True")
