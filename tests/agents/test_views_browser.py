"""The agent pages in a real browser: chromium driven by Playwright against ``live_server``
(set-up in tests/browser.py)."""

from playwright.sync_api import expect

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


def test_an_agent_is_deleted_from_its_edit_page_after_a_confirmation(
    alice_page, live_server, make_agent, make_execution, screenshot
):
    from agents.models import Agent

    agent = make_agent(name="nightly-report")
    make_execution(agent, "succeeded")
    page = alice_page
    page.goto(f"{live_server.url}/agents/{agent.uuid}/edit/")
    page.get_by_role("link", name="Delete agent…").click()
    expect(page.get_by_role("heading", name="Delete agent")).to_be_visible()
    expect(page.locator("main")).to_contain_text("nightly-report")
    screenshot("agent-delete-confirm")

    page.get_by_role("button", name="Delete agent").click()
    page.wait_for_url(f"{live_server.url}/agents/")
    expect(page.locator("body")).to_contain_text("deleted")
    assert not Agent.objects.filter(pk=agent.pk).exists()


def test_a_delayed_run_says_why_it_waits_and_until_when(
    alice_page, live_server, make_agent, screenshot
):
    from datetime import timedelta

    from django.utils import timezone

    from executions.services import execution_request

    start = timezone.now() + timedelta(minutes=20)
    execution = execution_request(agent=make_agent(), trigger="api", not_before=start)
    page = alice_page
    page.goto(f"{live_server.url}/executions/{execution.uuid}/")
    wait = page.locator("#wait")
    expect(wait).to_contain_text("Delayed until its start time")
    expect(page.locator("#wait-until")).to_be_visible()
    assert wait.get_attribute("data-wait-reason") == "delayed"
    screenshot("execution-delayed")
