"""A bulk retry in a real browser, on a phone-sized window: from the filtered list to the
preview, the confirm, and the action's page refreshed by htmx until the worker has done it."""

from playwright.sync_api import expect

from executions.models import BulkAction, Execution


def test_a_bulk_retry_from_the_list_to_its_outcome(
    worker, alice_page, live_server, make_agent, make_execution, screenshot
):
    page = alice_page
    page.set_viewport_size({"width": 390, "height": 844})
    agent = make_agent(name="nightly-sync")
    failed = [make_execution(agent, "failed", error_category="timeout") for _ in range(12)]
    make_execution(agent, "succeeded")

    page.goto(f"{live_server.url}/executions/?status=failed")
    page.locator("#bulk-retry").click()
    expect(page.locator("#bulk-headline")).to_have_text("This will retry 12 executions.")
    screenshot("bulk-preview-390")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

    page.locator("#bulk-confirm").click()
    expect(page.locator("#bulk-progress")).to_contain_text("12 of 12 done", timeout=30_000)
    expect(page.locator("#bulk-live .badge")).to_have_text("Done")
    screenshot("bulk-done-390")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert "Asked by alice on the executions page" in page.content()

    action = BulkAction.objects.get()
    assert (action.done, action.previewed, action.via) == (12, 12, "page")
    assert Execution.objects.filter(retry_of__in=failed).count() == 12
    # Polling stopped with the final state: the live part has no trigger any more.
    assert page.locator("#bulk-live[hx-trigger]").count() == 0

    # "See the retries it made": exactly this action's, on the list.
    page.locator("#bulk-made").click()
    expect(page.locator("#bulk-filter")).to_contain_text("The retries made by the bulk retry of")
    expect(page.locator("table tbody tr")).to_have_count(12)
    screenshot("bulk-made-390")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

    # A typo, an agent that is not hers, an unknown action: each refused, named.
    page.goto(
        f"{live_server.url}/executions/bulk/?action=cancel&stauts=running"
        "&agent=00000000-0000-0000-0000-000000000000"
    )
    expect(page.locator("#bulk-problems li")).to_have_count(2)
    expect(page.locator("#bulk-problems")).to_contain_text("Agent: No agent of yours has this id.")
    expect(page.locator("#bulk-problems")).to_contain_text("“stauts”: Unknown filter.")
    assert page.locator("#bulk-confirm").count() == 0
    screenshot("bulk-refused-390")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.goto(f"{live_server.url}/executions/bulk/?action=delete&status=failed")
    expect(page.locator("#bulk-error")).to_have_text(
        "Unknown action “delete”: give retry or cancel."
    )

    # Several statuses: the list keeps both selected, and the preview names both.
    page.goto(f"{live_server.url}/executions/?status=failed&status=cancelled")
    screenshot("bulk-two-statuses-list-390")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.locator("#bulk-retry").click()
    expect(page.locator("#bulk-preview")).to_contain_text("Failed, Cancelled")
    expect(page.locator("#bulk-headline")).to_have_text(
        "Nothing to retry: the 12 executions this filter selects are already retried."
    )
    assert page.locator("#bulk-confirm").count() == 0
    screenshot("bulk-nothing-390")
