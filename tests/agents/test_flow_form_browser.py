"""The flow form's step editor (static/flow_editor.js) in a real browser: steps built as rows,
written to the JSON the form sends, problems shown at their row, and the page at phone and
desktop widths. The form without script is the JSON box alone (the last test)."""

import json

import pytest
from playwright.sync_api import expect

from agents.models import Agent
from tests.browser import sign_in
from tests.config.test_pages_fit import OVERFLOW

WIDTHS = (390, 1280)


@pytest.fixture
def fetch(make_agent):
    return make_agent(name="fetch-orders")


@pytest.fixture
def notify(make_agent):
    return make_agent(name="notify-team")


def definition(page):
    """The steps the form sends: the JSON box the editor writes."""
    return json.loads(page.input_value("#id_config-steps"))


def fits(page, shot, screenshot):
    """What sticks out of the page at a phone's and a desktop's width (none: it fits)."""
    failures = []
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        screenshot(f"{shot}-{width}")
        overflow = page.evaluate(OVERFLOW)
        if overflow:
            failures.append(f"at {width} px: " + "; ".join(overflow["culprits"]))
    return failures


def test_a_two_step_flow_is_built_in_the_editor_and_its_problem_shown_at_its_row(
    alice_page, live_server, fetch, notify, screenshot
):
    page = alice_page
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/agents/new/flow/")
    page.fill("#id_agent-name", "morning-orders")
    # A new flow starts with one run step; the JSON box is folded away under the rows.
    expect(page.locator(".editor-step")).to_have_count(1)
    expect(page.locator("#id_config-steps")).to_be_hidden()

    page.fill("#flow-1-key", "orders")
    page.select_option("#flow-1-agent", label="fetch-orders")
    page.fill("#flow-1-input", '{"day": "{{ input.day }}"}')
    page.get_by_role("button", name="Add step").click()
    expect(page.locator(".editor-step")).to_have_count(2)
    expect(page.locator("#flow-2-key")).to_be_focused()
    page.fill("#flow-2-key", "tell")
    page.select_option("#flow-2-agent", label="notify-team")
    expect(page.locator("#flow-step-2 .editor-input .help")).to_contain_text(
        "earlier steps: orders."
    )
    page.fill("#flow-2-input", '{"count": "{{ steps.orders.result.count }}"}')
    page.select_option("#flow-2-retry", "custom")
    page.fill("#flow-2-max_retries", "2")
    assert definition(page) == [
        {"key": "orders", "agent": str(fetch.uuid), "input": {"day": "{{ input.day }}"}},
        {
            "key": "tell",
            "agent": str(notify.uuid),
            "input": {"count": "{{ steps.orders.result.count }}"},
            "retry": {"max_retries": 2},
        },
    ]

    # Moved first, "tell" reads a step that no longer comes before it: refused, at its row.
    page.get_by_role("button", name="Move step 2 up").click()
    expect(page.locator("#flow-1-key")).to_have_value("tell")
    expect(page.get_by_role("button", name="Move step 1 up")).to_be_disabled()
    page.get_by_role("button", name="Create agent").click()

    expect(page.locator("#form-problems")).to_contain_text("Step 1 “tell”, input")
    row = page.locator("#flow-step-1")
    expect(row.locator(".editor-input .errorlist")).to_contain_text(
        "{{ steps.orders.result.count }}: "
    )
    expect(row.locator(".editor-input .errorlist")).to_contain_text("step “orders”")
    expect(page.locator("#flow-2-agent")).to_have_value(str(fetch.uuid))
    assert not Agent.objects.filter(kind="flow").exists()
    failures = fits(page, "flow-editor-error", screenshot)
    assert not failures, "\n".join(failures)

    # Moved back down, the problem goes with the row; saved, the flow is on its page.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("button", name="Move step 1 down").click()
    expect(page.locator("#flow-step-2 .editor-input .errorlist")).to_contain_text("step “orders”")
    page.get_by_role("button", name="Create agent").click()

    flow = Agent.objects.get(name="morning-orders")
    page.wait_for_url(f"{live_server.url}/agents/{flow.uuid}/")
    facts = page.locator("dl.facts").first
    expect(facts).to_contain_text("orders: run “fetch-orders”")
    expect(facts).to_contain_text("tell: run “notify-team”")
    screenshot("flow-agent-page")
    assert [s["key"] for s in flow.config["steps"]] == ["orders", "tell"]
    assert flow.config["steps"][1]["retry"] == {"max_retries": 2}


def test_editing_the_json_by_hand_redraws_the_rows(
    alice_page, live_server, make_agent, fetch, notify, screenshot
):
    flow = make_agent(
        name="fan-out", kind="flow", config={"steps": [{"key": "a", "agent": "fetch-orders"}]}
    )
    page = alice_page
    page.goto(f"{live_server.url}/agents/{flow.uuid}/edit/")
    expect(page.locator("#flow-1-agent")).to_have_value(str(fetch.uuid))
    page.locator("#flow-json summary").click()
    steps = [
        {"key": "a", "agent": str(fetch.uuid)},
        {"key": "cool-off", "wait": {"seconds": 90}},
        {
            "key": "both",
            "parallel": [
                {"key": "b", "agent": "notify-team", "input": {"a": "{{ steps.a.result }}"}},
                {"key": "c", "agent": str(fetch.uuid), "retry": {"enabled": False}},
            ],
        },
    ]
    page.fill("#id_config-steps", json.dumps(steps))

    expect(page.locator("#flow-steps .editor-steps > .editor-step")).to_have_count(3)
    expect(page.get_by_label("Step 2: what it does")).to_have_value("wait")
    expect(page.locator("#flow-2-seconds")).to_have_value("90")
    expect(page.locator("#flow-3-1-agent")).to_have_value(str(notify.uuid))
    expect(page.locator("#flow-3-2-retry")).to_have_value("off")
    expect(page.locator("#flow-step-3 .editor-input .help").first).to_contain_text(
        "earlier steps: a, cool-off."
    )
    # Not JSON yet: the rows keep the last valid definition and say so under the box.
    page.fill("#id_config-steps", '[{"key": ')
    expect(page.locator("#flow-json-note")).to_contain_text("not valid JSON yet")
    expect(page.locator(".editor-step")).to_have_count(3)
    page.fill("#id_config-steps", json.dumps(steps))
    expect(page.locator("#flow-json-note")).to_have_count(0)
    failures = fits(page, "flow-editor-all-kinds", screenshot)
    assert not failures, "\n".join(failures)

    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(f"{live_server.url}/agents/{flow.uuid}/")
    flow.refresh_from_db()
    assert [s["key"] for s in flow.config["steps"]] == ["a", "cool-off", "both"]
    assert flow.config["steps"][2]["parallel"][0]["agent"] == str(notify.uuid)


def test_without_script_the_json_box_alone_makes_the_flow(
    browser, live_server, alice, fetch, screenshot_dir
):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        sign_in(page, live_server, "alice", "alice-password")
        page.goto(f"{live_server.url}/agents/new/flow/")
        expect(page.locator("#id_config-steps")).to_be_visible()
        page.fill("#id_agent-name", "plain")
        page.fill("#id_config-steps", '[{"key": "a", "agent": "nobody"}]')
        page.get_by_role("button", name="Create agent").click()
        expect(page.locator("#form-problems")).to_contain_text("Step 1 “a”, agent")
        expect(page.locator("[data-flow-nojs]")).to_contain_text("You have no agent “nobody”.")
        page.screenshot(path=str(screenshot_dir / "flow-form-without-script.png"), full_page=True)

        page.fill("#id_config-steps", '[{"key": "a", "agent": "fetch-orders"}]')
        page.get_by_role("button", name="Create agent").click()
        expect(page.locator("h1")).to_contain_text("plain")
        assert Agent.objects.get(name="plain").config["steps"] == [
            {"key": "a", "agent": str(fetch.uuid)}
        ]
    finally:
        context.close()


def test_a_step_changes_type_and_keeps_its_agent_and_input(alice_page, live_server, fetch):
    page = alice_page
    page.goto(f"{live_server.url}/agents/new/flow/")
    page.fill("#flow-1-key", "get")
    page.select_option("#flow-1-agent", label="fetch-orders")
    page.fill("#flow-1-input", '{"n": 1}')

    page.get_by_label("Step 1: what it does").select_option("group")
    assert definition(page) == [
        {"key": "get", "parallel": [{"key": "get-1", "agent": str(fetch.uuid), "input": {"n": 1}}]}
    ]
    page.get_by_role("button", name="Add a step to the group").click()
    expect(page.locator("#flow-1-2-key")).to_be_focused()
    expect(page.locator("#flow-1-2-key")).to_have_value("get-2")
    page.get_by_role("button", name="Remove step 2 of group 1").click()

    page.get_by_label("Step 1: what it does").select_option("wait")
    assert definition(page) == [{"key": "get", "wait": {"seconds": 60}}]
    page.select_option("#flow-1-wait", "until")
    page.fill("#flow-1-until", "2026-12-01T09:00:00Z")
    assert definition(page) == [{"key": "get", "wait": {"until": "2026-12-01T09:00:00Z"}}]
    page.get_by_role("button", name="Remove step 1").click()
    expect(page.get_by_text("No steps yet: a flow needs at least one.")).to_be_visible()
    assert definition(page) == []


def test_input_that_is_not_json_yet_is_marked_and_not_sent(alice_page, live_server, fetch):
    page = alice_page
    page.goto(f"{live_server.url}/agents/new/flow/")
    page.fill("#id_agent-name", "half-typed")
    page.select_option("#flow-1-agent", label="fetch-orders")
    page.fill("#flow-1-input", '{"n": 1}')
    page.fill("#flow-1-input", '{"n": ')
    expect(page.locator("#flow-step-1 .editor-input")).to_contain_text("This is not valid JSON yet")
    assert definition(page) == [{"key": "step-1", "agent": str(fetch.uuid), "input": {"n": 1}}]

    page.get_by_role("button", name="Create agent").click()
    expect(page.locator("#flow-1-input")).to_be_focused()
    assert page.url == f"{live_server.url}/agents/new/flow/"
    assert not Agent.objects.filter(name="half-typed").exists()
