"""The agent pages in a real browser: chromium driven by Playwright against ``live_server``
(set-up in tests/browser.py)."""

from agents.models import DEFAULT_RETRY_ON


def test_the_new_agent_form_starts_with_the_temporary_errors_ticked_for_retry(
    alice_page, live_server
):
    """The model's default (temporary errors are retried) must be what the form offers, or an
    agent created without touching "Retry on" never retries."""
    page = alice_page
    page.goto(f"{live_server.url}/agents/new/function/")
    ticked = page.eval_on_selector_all(
        "input[name='agent-retry_on']:checked", "boxes => boxes.map(b => b.value)"
    )
    assert sorted(ticked) == sorted(DEFAULT_RETRY_ON), (
        f"the New agent form ticks {ticked} under Retry on; the default is {DEFAULT_RETRY_ON}"
    )
