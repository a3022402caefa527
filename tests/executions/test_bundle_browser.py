"""The execution page's "Download support bundle" link in chromium, at a phone's width and a
desktop's: it is there, fits the screen, and clicking it downloads the run's bundle."""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

WIDTHS = {"390": 390, "1280": 1280}


def test_the_link_fits_the_page_and_downloads_the_bundle(
    alice_page, live_server, make_agent, make_execution, screenshot
):
    run = make_execution(
        make_agent(name="nightly-report"), "failed", attempt=1, reason="The report service is down."
    )
    page = alice_page

    for name, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{live_server.url}/executions/{run.uuid}/")
        link = page.get_by_role("link", name="Download support bundle")
        link.scroll_into_view_if_needed()
        assert link.is_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= width, (
            f"the page is wider than the {width} px screen"
        )
        screenshot(f"support-bundle-{name}")

    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename == f"conveyor-run-{run.uuid}.json"
    bundle = json.loads(Path(download.path()).read_text(encoding="utf-8"))
    assert bundle["run"]["id"] == str(run.uuid)
    assert bundle["error"]["message"].startswith("The report service is down.")
