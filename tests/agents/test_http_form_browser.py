"""The http agent's form in a real browser: what it shows for each choice (no script needed)."""

from playwright.sync_api import expect


def test_the_fixed_body_box_shows_only_while_the_body_is_fixed(alice_page, live_server):
    page = alice_page
    page.goto(f"{live_server.url}/agents/new/http/")
    fixed_body = page.locator("#id_config-fixed_body")

    expect(fixed_body).to_be_hidden()
    page.select_option("#id_config-body", "fixed")
    expect(fixed_body).to_be_visible()
    expect(page.get_by_text("Fixed body (JSON)")).to_be_visible()
    page.select_option("#id_config-body", "none")
    expect(fixed_body).to_be_hidden()


def test_an_agent_saved_without_headers_shows_empty_boxes_not_null(
    alice_page, live_server, make_agent, alice
):
    agent = make_agent(alice, kind="http", config={"url": "https://example.com/hook"})
    page = alice_page
    page.goto(f"{live_server.url}/agents/{agent.uuid}/edit/")

    values = page.eval_on_selector_all(
        "form input:not([type=hidden]), form textarea", "boxes => boxes.map(b => b.value)"
    )
    assert "null" not in values
    assert page.input_value("#id_config-headers") == ""
    expect(page.get_by_label("Request timeout (per HTTP call, seconds)")).to_be_visible()
    expect(page.get_by_label("Time limit (whole attempt, s)")).to_be_visible()


def test_an_internal_address_is_refused_in_the_form_with_the_runs_words(
    alice_page, live_server, settings
):
    settings.CONVEYOR_OUTBOUND_ALLOW = []
    page = alice_page
    page.goto(f"{live_server.url}/agents/new/http/")
    page.fill("#id_agent-name", "inside")
    page.fill("#id_config-url", "http://169.254.169.254/latest/meta-data/")
    page.get_by_role("button", name="Create agent").click()

    expect(page.locator(".field-url .errorlist")).to_contain_text(
        "(169.254.169.254 — a cloud metadata service), which Conveyor does not call for safety."
    )
