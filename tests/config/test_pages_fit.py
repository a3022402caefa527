"""Every page fits a 390 px phone and a 1280 px desktop without sideways scrolling.

The pages come from the URLconf, as in tests/config/test_urls_isolation.py (whose walk and
``url_for`` are reused), filled with real objects: an agent of each kind with schedules and its
webhook on, one with a long name, runs in every status with long errors. The operators' pages
(/ops/, the admin's agent and execution pages), the API docs and the 404 page are added by name:
the admin and the API have routes by the hundred that are not pages of their own.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from agents.kinds import KINDS
from agents.schedule_services import schedule_create
from agents.webhook_services import webhook_enable
from api.services import token_create
from executions.bulk import bulk_action_create, bulk_action_fail
from executions.models import Execution
from executions.services import execution_claim
from notifications.services import channel_create, channel_disable, channel_rotate_start
from ops.models import Regression
from tests.browser import SCREENSHOTS, sign_in
from tests.config.test_urls_isolation import POST_ONLY, owner_routes, url_for
from tests.conftest import failure, flow_started, step_ended

WIDTHS = (390, 1280)
LONG_NAME = "nightly-invoice-reconciliation-for-the-european-subsidiaries_and-their-partners-v2"
LONG_ERROR = (
    "The ledger answered 502 Bad Gateway. It said: “upstream_connect_error_or_disconnect/"
    "reset_before_headers.reset_reason:remote_connection_failure,transport_failure_reason:"
    "delayed_connect_error:_Connection_refused_at_https://ledger.internal.example.com/v2/"
    "invoices?since=2026-11-30T00:00:00Z&page_size=500&cursor=eyJpZCI6IDEyMzQ1Njc4OTB9”. "
) * 2

# Which element sticks out, when the page is wider than the window.
OVERFLOW = """() => {
  const width = window.innerWidth;
  const scrollWidth = document.documentElement.scrollWidth;
  if (scrollWidth <= width) return null;
  const name = el => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    (typeof el.className === "string" && el.className.trim()
      ? "." + el.className.trim().split(/\\s+/).join(".") : "");
  const path = el => {
    const parts = [];
    for (let e = el; e && e !== document.body && parts.length < 4; e = e.parentElement) {
      parts.unshift(name(e));
    }
    return parts.join(" > ");
  };
  // Inside a box that scrolls or clips on its own, an element does not widen the page.
  const clipped = el => {
    for (let e = el.parentElement; e && e !== document.body; e = e.parentElement) {
      if (getComputedStyle(e).overflowX !== "visible") return true;
    }
    return false;
  };
  const wide = [...document.querySelectorAll("body *")].filter(
    el => el.getBoundingClientRect().right > width + 0.5 && !clipped(el));
  // The innermost ones: elements none of whose children stick out too.
  let leaves = wide.filter(el => ![...el.children].some(c => wide.includes(c)));
  if (!leaves.length) {
    // Text that does not wrap (a long word) sticks out of its element, not as an element.
    leaves = [...document.querySelectorAll("body *")].filter(el =>
      el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0 && !clipped(el) &&
      getComputedStyle(el).overflowX === "visible").slice(-6);
  }
  return {scrollWidth, width, culprits: leaves.slice(0, 6).map(el =>
    path(el) + " (right edge at " + Math.round(el.getBoundingClientRect().right) + " px)")};
}"""


def staff_routes():
    """(name, pattern) of the operations pages, walked from the URLconf like owner_routes()."""
    routes = []
    for entry in get_resolver().url_patterns:
        if isinstance(entry, URLResolver) and entry.namespace == "ops":
            routes += [
                (f"ops:{p.name}", p.pattern)
                for p in entry.url_patterns
                if isinstance(p, URLPattern) and p.name
            ]
    return routes


# Parts of a page that htmx fetches into it (without the page's stylesheet): measured inside
# their page (executions:detail, ops:dashboard), which renders the same template.
FRAGMENTS = {"executions:live", "executions:bulk-live", "ops:workers"}
# Not pages: a run's saved file and its support bundle (downloads), the operators' actions (POST).
NOT_PAGES = {"artifacts:download", "executions:bundle", "ops:breaker_close"}


def page_routes():
    """Every page a person opens (GET), from the URLconf; the actions (POST) are left out."""
    routes = [(n, p) for n, p in owner_routes() if n not in POST_ONLY] + staff_routes()
    return [(n, p) for n, p in routes if n not in FRAGMENTS | NOT_PAGES]


# Pages outside the walk, by name (see the module docstring); "login" is seen signed out.
NAMED_PAGES = ["login", "admin-agents", "admin-executions", "api-docs", "not-found"]


@pytest.fixture
def objects(make_agent, make_execution, alice):
    http = make_agent(
        alice,
        name=LONG_NAME,
        kind="http",
        config={"url": "https://hooks.example.com/ledger/v2/invoices/reconcile?tenant=eu-west"},
        description="Reconciles the day's invoices with the ledger of every subsidiary. " * 3,
    )
    function = make_agent(alice, name="echo")
    for agent in (http, function):
        schedule_create(agent=agent, kind="cron", cron="*/5 * * * *", timezone="Europe/Amsterdam")
        schedule_create(agent=agent, kind="interval", interval_seconds=3600)
        webhook_enable(agent=agent)
    executions = {}
    for status in Execution.Status.values:
        extra = {}
        if status in ("failed", "retrying"):
            extra = {"reason": LONG_ERROR, "detail": "Traceback (most recent call last):\n" * 3}
        if status == "succeeded":
            extra = {"result": {"status": 200, "body": {"token": "x" * 180}}}
        if status == "retrying":
            extra["attempt"] = 2
        executions[status] = make_execution(http, status, input={"since": "y" * 150}, **extra)
    make_execution(function, "succeeded")
    # A flow of both, with long keys, a wait and a parallel group; one run of it in progress
    # (its first step running) and one failed at its second step.
    flow = make_agent(
        alice,
        name=f"{LONG_NAME}-flow",
        kind="flow",
        config={
            "steps": [
                {"key": "fetch-every-invoice-of-every-subsidiary", "agent": "echo",
                 "input": {"since": "{{ input.since }}"}},
                {"key": "cool-off", "wait": {"seconds": 3600}},
                {"key": "tell", "parallel": [
                    {"key": "mail-the-finance-team-about-it", "agent": "echo"},
                    {"key": "reconcile-with-the-ledger-of-every-subsidiary", "agent": LONG_NAME},
                ]},
            ],
            "timeout": 86400,
        },
    )  # fmt: skip
    for status in ("running", "failed"):
        # One transaction: the message of its first step, sent on commit, finds the step
        # claimed already (a worker of the session would run it otherwise).
        with transaction.atomic():
            run = flow_started(flow, {"since": "z" * 150})
            if status == "failed":
                error = failure("upstream_error", retryable=False, reason=LONG_ERROR)
                step_ended(run, "fetch-every-invoice-of-every-subsidiary", error=error)
            else:
                step = run.children.get()
                assert execution_claim(
                    execution_id=step.pk, expected_attempt=0, worker="w", at=timezone.now()
                )
        executions[f"flow-{status}"] = run
    # Notification channels: a long webhook mid-rotation, one turned off after a 410, an email.
    long_hook, _ = channel_create(
        owner=alice,
        kind="webhook",
        name=f"{LONG_NAME}-pager",
        target="https://hooks.example.com/" + "incidents/" * 12 + "?token=" + "t" * 80,
    )
    channel_rotate_start(channel=long_hook)
    gone, _ = channel_create(
        owner=alice,
        kind="slack",
        name="retired-team-channel",
        target="https://chat.example.com/hooks/T000/B000/" + "x" * 60,
    )
    channel_disable(
        channel=gone,
        reason="The endpoint answered 410 Gone on 30 Nov 2026, 12:00 UTC: it asked not to be "
        "sent anything more. Check its address, then turn the channel on again.",
    )
    channel_create(owner=alice, kind="email", name="ops", target=f"{LONG_NAME}@example.com")
    token, _ = token_create(owner=alice, name="ci-deploys-from-the-main-branch-of-conveyor")
    schedule = http.schedules.first()
    # A bulk retry with every filter, stopped by an error half-way (its longest page).
    now = timezone.now()
    bulk_action = bulk_action_create(
        owner=alice,
        action="retry",
        via="page",
        filter={
            "q": LONG_NAME,
            "status": ["failed", "cancelled"],
            "trigger": ["api", "manual", "schedule", "webhook"],
            "error_category": ["upstream_error", "timeout", "network", "internal"],
            "agent": str(http.uuid),
            # A range around now: a fixed one selects nothing once its end has passed.
            "created_after": (now - timedelta(days=30)).isoformat(),
            "created_before": (now + timedelta(days=1)).isoformat(),
            "slower_than": 1.5,
        },
    )
    bulk_action_fail(bulk_id=bulk_action.pk, error="Stopped by an unexpected error. " * 6)
    bulk_action.refresh_from_db()
    # The long-named agent in regression: its page's card and the dashboard's panel show it.
    Regression.objects.create(
        agent=http,
        what=Regression.What.P95,
        started_at=now - timedelta(hours=3),
        last_value=1234.5,
        usual_value=4.1,
        last_runs=50,
        usual_runs=310,
        threshold=50,
    )
    return {
        "bulk_action": bulk_action,
        "agents": [http, function, flow],
        "executions": list(executions.values()),
        "token": token,
        "schedule": schedule,
    }


def urls_for(name, pattern, objects):
    """Every URL of a route: once per agent (or run) when it names one."""
    if name.startswith("ops:"):
        return [reverse(name)]
    if name == "agents:create":
        return [reverse(name, kwargs={"kind": kind}) for kind in KINDS]
    base = {
        "agent": objects["agents"][0],
        "execution": objects["executions"][0],
        "token": objects["token"],
        "schedule": objects["schedule"],
        "bulk_action": objects["bulk_action"],
    }
    variants = [{}]
    if list(pattern.converters) == ["uuid"]:
        if name.startswith("executions:bulk"):
            pass
        elif name.startswith("executions:"):
            variants = [{"execution": e} for e in objects["executions"]]
        elif name.startswith("agents:"):
            variants = [{"agent": a} for a in objects["agents"]]
    return [url_for(name, pattern, {**base, **variant}) for variant in variants]


def named_urls(name, objects):
    """The URLs of a page in NAMED_PAGES."""
    execution = objects["executions"][-1]
    return {
        "login": ["/login/"],
        "admin-agents": [
            reverse("admin:agents_agent_changelist"),
            *[reverse("admin:agents_agent_change", args=[a.pk]) for a in objects["agents"]],
        ],
        "admin-executions": [
            reverse("admin:executions_execution_changelist"),
            *[
                reverse("admin:executions_execution_change", args=[e.pk])
                for e in objects["executions"]
            ],
        ],
        "api-docs": [reverse("api:docs")],
        "not-found": [f"/agents/{uuid.uuid4()}/", f"/no-such-page/{execution.uuid}/"],
    }[name]


def overflows(page, url, live_server, shot=""):
    """What sticks out of ``url`` at each width, in words (none: it fits). ``shot`` names the
    screenshots taken at each width (test-artifacts/screenshots/fit-<shot>-<width>.png)."""
    failures = []
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{live_server.url}{url}")
        page.wait_for_load_state("networkidle")
        # What is folded away (an example request, a traceback) has to fit too.
        page.evaluate("document.querySelectorAll('main details').forEach(d => d.open = true)")
        if shot:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            path = SCREENSHOTS / f"fit-{shot}-{width}.png"
            page.screenshot(path=str(path), full_page=True)
        overflow = page.evaluate(OVERFLOW)
        if overflow:
            failures.append(
                f"{url} at {width} px is {overflow['scrollWidth']} px wide; sticking out: "
                + "; ".join(overflow["culprits"])
            )
    return failures


def test_the_routes_cover_the_pages_people_open():
    names = {name for name, _ in page_routes()}
    assert {"home", "agents:list", "agents:detail", "executions:detail", "tokens:list"} <= names
    assert "ops:dashboard" in names
    assert FRAGMENTS.issubset(name for name, _ in owner_routes() + staff_routes())


@pytest.fixture
def operator_page(page, live_server, alice):
    """alice, made staff, so that her pages and the operators' are open to one browser."""
    alice.is_staff = alice.is_superuser = True
    alice.save()
    sign_in(page, live_server, "alice", "alice-password")
    return page


@pytest.mark.parametrize(("name", "pattern"), page_routes(), ids=lambda v: str(v))
def test_the_page_fits_a_phone_and_a_desktop(operator_page, live_server, objects, name, pattern):
    failures = []
    for number, url in enumerate(urls_for(name, pattern, objects)):
        shot = f"{name.replace(':', '-')}-{number}"
        failures += overflows(operator_page, url, live_server, shot)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", NAMED_PAGES)
def test_the_operators_pages_and_the_rest_fit_too(operator_page, live_server, objects, name):
    if name == "login":
        operator_page.context.clear_cookies()
    failures = []
    for number, url in enumerate(named_urls(name, objects)):
        failures += overflows(operator_page, url, live_server, f"{name}-{number}")
    assert not failures, "\n".join(failures)
