"""Playwright set-up for the browser tests (test_browser.py).

* The browser is Debian's chromium (``apt-get install -y chromium``), never a browser
  downloaded by ``playwright install``. Without it the browser tests are skipped.
* The pages are served by pytest-django's ``live_server``; Playwright's sync API runs an event
  loop in the test's thread, so Django's async-safety check must be off for the test's own
  database calls (else ``SynchronousOnlyOperation``).
* Screenshots go to ``test-artifacts/screenshots/`` at the repository root (gitignored).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent.parent
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


def _chromium() -> str | None:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "browser: drives a real browser (chromium at /usr/bin/chromium) with Playwright"
    )


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright's launch arguments, with Debian's chromium as the browser."""
    executable = _chromium()
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


@pytest.fixture
def signed_in_page(page, live_server, alice):
    """A page signed in as alice through the real login form."""
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-password")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")
    return page
