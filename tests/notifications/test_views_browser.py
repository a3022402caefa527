"""The notification pages in a real browser (chromium, Playwright, ``live_server``), with the
real worker sending the notifications to a real local server (``receiver``): the settings page
with a webhook channel just added (its secret shown once) and one Conveyor turned off after a
410, the execution page's Notifications panel filling in live, and the agent form's section.
Screenshots: test-artifacts/screenshots/notifications-*.png, at 390 px and 1280 px."""

from playwright.sync_api import expect
from werkzeug import Response

from executions.services import execution_request
from notifications.models import Channel, Delivery
from notifications.services import channel_create
from tests.config.test_pages_fit import OVERFLOW
from tests.conftest import wait_for
from tests.notifications.conftest import eventually, url

WIDTHS = (390, 1280)


def shots(page, screenshot, name):
    """A screenshot at each width; fails if anything sticks out sideways."""
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        screenshot(f"notifications-{name}-{width}")
        overflow = page.evaluate(OVERFLOW)
        assert overflow is None, f"{name} at {width} px: {overflow}"


def failing_agent(make_agent, owner, channels, name="nightly-invoice-reconciliation"):
    return make_agent(
        owner, name=name, config={"function": "demo.broken"}, max_retries=0,
        notify_channels=channels,
    )  # fmt: skip


def test_the_channels_page_with_a_new_webhook_and_one_turned_off_after_a_410(
    worker, alice_page, live_server, screenshot, make_agent, alice, receiver
):
    receiver.expect_request("/gone", method="POST").respond_with_data("", status=410)
    receiver.expect_request("/hook", method="POST").respond_with_data("ok")
    gone, _ = channel_create(
        owner=alice, kind="webhook", name="old-incident-endpoint", target=url(receiver, "/gone")
    )
    channel_create(owner=alice, kind="email", name="ops", target="ops@example.com")
    # The real way a channel is turned off: an agent's run fails, the worker sends its
    # notification, and the endpoint answers 410 Gone.
    run = execution_request(agent=failing_agent(make_agent, alice, [gone]), trigger="manual")
    wait_for(run, "failed")
    eventually(
        lambda: not Channel.objects.get(pk=gone.pk).is_enabled,
        what="the channel turned off after the endpoint's 410",
    )

    page = alice_page
    page.get_by_role("link", name="Notifications").click()
    page.wait_for_url(f"{live_server.url}/settings/notifications/")
    form = page.locator("#new-channel form")
    form.get_by_label("Kind").select_option("webhook")
    form.get_by_label("Name").fill("pager")
    form.get_by_label("Send to").fill(url(receiver, "/hook?team=payments"))
    form.get_by_role("button", name="Add channel").click()

    pager = Channel.objects.get(name="pager")
    row = page.locator(f"#channel-{pager.uuid}")
    expect(row.locator(".channel-secret")).to_have_text(pager.secrets["current"])
    expect(row.locator(".channel-target")).to_have_text(url(receiver, "/hook?…"))
    off = page.locator(f"#channel-{gone.uuid}")
    expect(off).to_contain_text("Conveyor turned it off.")
    expect(off).to_contain_text("410 Gone")
    expect(off.get_by_role("button", name="Turn on again")).to_be_visible()
    shots(page, screenshot, "channels")

    row.get_by_role("button", name="Send a test").click()
    expect(row.locator(".channel-test-result")).to_have_text("Delivered (200)")
    screenshot("notifications-channels-tested-1280")

    page.reload()
    expect(row).to_be_visible()
    expect(page.locator(".channel-secret")).to_have_count(0)  # shown once

    off.get_by_role("button", name="Turn on again").click()
    expect(page.locator(f"#channel-{gone.uuid}")).not_to_contain_text("Conveyor turned it off.")
    assert Channel.objects.get(pk=gone.pk).is_enabled


def test_the_execution_page_shows_its_notifications_as_they_are_sent(
    worker, alice_page, live_server, screenshot, make_agent, alice, receiver
):
    answers = iter([503])

    def busy_once(request):
        return Response("", status=next(answers, 200))

    receiver.expect_request("/hook", method="POST").respond_with_handler(busy_once)
    receiver.expect_request("/gone", method="POST").respond_with_data("", status=410)
    pager, _ = channel_create(
        owner=alice, kind="webhook", name="pager", target=url(receiver, "/hook")
    )
    ops, _ = channel_create(owner=alice, kind="email", name="ops", target="ops@example.com")
    old, _ = channel_create(
        owner=alice, kind="slack", name="retired-team-channel", target=url(receiver, "/gone")
    )
    agent = failing_agent(make_agent, alice, [pager, ops, old])
    run = execution_request(agent=agent, trigger="manual")

    page = alice_page
    page.goto(f"{live_server.url}/executions/{run.uuid}/")
    panel = page.locator("#deliveries")
    # Filled in by the page's own refresh, as the worker sends and retries.
    expect(panel.locator('[data-delivery-status="delivered"]')).to_have_count(2, timeout=30_000)
    expect(panel.locator('[data-delivery-status="failed"]')).to_have_count(1)
    expect(panel).to_contain_text("Delivered (200)")
    expect(panel).to_contain_text("Answered 503")
    expect(panel).to_contain_text("Answered 410")
    expect(panel).to_contain_text("Gave up")
    assert Delivery.objects.get(channel=pager).tries.count() == 2
    # Nothing left to send: the page stops refreshing.
    expect(page.locator("#live")).not_to_have_attribute("hx-trigger", "every 1s")
    shots(page, screenshot, "execution")


def test_the_agent_forms_notifications_section(
    alice_page, live_server, screenshot, make_agent, alice
):
    for name, kind, target in [
        ("ops", "email", "ops@example.com"),
        ("pager-for-the-payments-team-on-call", "webhook", "https://hooks.example.com/p"),
        ("team", "slack", "https://chat.example.com/hooks/T000/B000"),
    ]:
        channel_create(owner=alice, kind=kind, name=name, target=target)
    agent = make_agent(alice, name="nightly-report")
    page = alice_page
    page.goto(f"{live_server.url}/agents/{agent.uuid}/edit/")
    section = page.locator("#notifications")
    section.get_by_label("When a run ends, whatever the outcome").check()
    section.get_by_label("Also when it recovers").check()
    section.get_by_label("ops (Email)").check()
    section.scroll_into_view_if_needed()
    shots(page, screenshot, "agent-form")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(f"{live_server.url}/agents/{agent.uuid}/")
    agent.refresh_from_db()
    assert agent.notify_on == "always" and agent.notify_recovery
    assert [c.name for c in agent.notify_channels.all()] == ["ops"]
