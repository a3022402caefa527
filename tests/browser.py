"""Playwright set-up for the tests that drive a real browser (loaded by tests/conftest.py).

* The browser is Debian's chromium (``apt-get install -y chromium``), never a browser
  downloaded by ``playwright install``. Without it the browser tests are skipped; with it they
  run. Every test that uses pytest-playwright's ``page`` (or ``browser``) is marked ``browser``
  by tests/conftest.py.
* The pages are served by pytest-django's ``live_server``. Playwright's sync API runs an event
  loop in the test's thread for the whole session, so Django's async-safety check must be off
  for the test's own database calls (else ``SynchronousOnlyOperation``).
* ``alice_page`` and ``staff_page`` are pages signed in through the real login form.
* ``screenshot("name")`` saves the whole page as test-artifacts/screenshots/name.png at the
  repository root (gitignored), for a person to look at.
* A module sets browser context options with pytest-playwright's marker, e.g.
  ``pytestmark = pytest.mark.browser_context_args(timezone_id="America/New_York")``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


def chromium() -> str | None:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright's launch arguments, with Debian's chromium as the browser."""
    executable = chromium()
    if executable is None:
        pytest.skip(
            "chromium is not installed (apt-get install -y chromium); the browser tests use it "
            "instead of a browser downloaded by `playwright install`."
        )
    return {**browser_type_launch_args, "executable_path": executable}


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
def screenshot(page, screenshot_dir):
    """``screenshot("name")`` saves the whole page as test-artifacts/screenshots/name.png."""

    def take(name: str) -> Path:
        path = screenshot_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def sign_in(page, live_server, username: str, password: str) -> None:
    """Sign in through the login form, as a person does; ends on the home page."""
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")


@pytest.fixture
def alice_page(page, live_server, alice):
    """A page signed in as alice."""
    sign_in(page, live_server, "alice", "alice-password")
    return page


@pytest.fixture
def staff_page(page, live_server, staff):
    """A page signed in as staff (sam), on a desktop-sized window."""
    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in(page, live_server, "sam", "staff-password")
    return page
