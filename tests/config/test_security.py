"""Production safety: `check --deploy` is clean with production settings, each HTTPS setting is
read from the environment, every page carries the security headers, pages run no inline
script, and failed sign-ins are throttled per account and address."""

import json
import os
import re
import secrets
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from api.models import ApiToken
from api.services import token_create
from config.security import client_address
from executions.services import execution_request
from tests.config import test_urls_isolation as isolation
from tests.config.test_settings import ROOT, import_settings
from tests.config.test_urls_isolation import owner_routes, url_for

TEMPLATES = ROOT / "templates"
# The route list and alice's objects of the isolation tests: one list of pages for both.
alices_objects = isolation.alices_objects
# What a production process has: DEBUG off, a long random SECRET_KEY, the Fernet keys, a host.
PRODUCTION = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "CONVEYOR_SECRET_KEYS": "Mdtqm0vYqS6M4Q0b9KCyN9vjYvqmIrLGxIXj0cr3fE8=",
    "ALLOWED_HOSTS": "conveyor.example.com",
}


def production_settings(tmp_path: Path, *names: str, **env: str) -> dict:
    """The values of ``names`` in config.settings imported with production's environment."""
    code = (
        "import json, config.settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in {list(names)!r}}}))"
    )
    clean_env = {
        "PATH": os.environ.get("PATH", ""),
        "CONVEYOR_VAR_DIR": str(tmp_path),
        **PRODUCTION,
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT, env=clean_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- manage.py check --deploy ----------------------------------------------------------------


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = {"PATH": os.environ.get("PATH", ""), "CONVEYOR_VAR_DIR": str(tmp_path), **PRODUCTION,
           "DJANGO_SETTINGS_MODULE": "config.settings"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


# --- One test per setting ----------------------------------------------------------------------


def test_production_cookies_are_secure_and_debug_ones_are_not(tmp_path):
    names = ("SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE")
    assert production_settings(tmp_path, *names) == dict.fromkeys(names, True)
    assert production_settings(tmp_path, *names, DEBUG="true") == dict.fromkeys(names, False)


def test_the_session_cookie_can_be_sent_over_plain_http_when_asked(tmp_path):
    values = production_settings(tmp_path, "SESSION_COOKIE_SECURE", SESSION_COOKIE_SECURE="false")
    assert values == {"SESSION_COOKIE_SECURE": False}


def test_the_csrf_cookie_can_be_sent_over_plain_http_when_asked(tmp_path):
    values = production_settings(tmp_path, "CSRF_COOKIE_SECURE", CSRF_COOKIE_SECURE="no")
    assert values == {"CSRF_COOKIE_SECURE": False}


def test_hsts_lasts_a_year_by_default_and_its_length_is_set_from_the_environment(tmp_path):
    assert production_settings(tmp_path, "SECURE_HSTS_SECONDS")["SECURE_HSTS_SECONDS"] == 31536000
    values = production_settings(tmp_path, "SECURE_HSTS_SECONDS", SECURE_HSTS_SECONDS="3600")
    assert values["SECURE_HSTS_SECONDS"] == 3600
    assert production_settings(tmp_path, "SECURE_HSTS_SECONDS", DEBUG="true") == {
        "SECURE_HSTS_SECONDS": 0
    }


def test_a_negative_hsts_length_stops_the_settings(tmp_path):
    result = import_settings(tmp_path, **PRODUCTION, SECURE_HSTS_SECONDS="-1")
    assert result.returncode != 0
    assert "SECURE_HSTS_SECONDS must be at least 0" in result.stderr


def test_hsts_covers_subdomains_unless_told_not_to(tmp_path):
    name = "SECURE_HSTS_INCLUDE_SUBDOMAINS"
    assert production_settings(tmp_path, name) == {name: True}
    assert production_settings(tmp_path, name, **{name: "false"}) == {name: False}


def test_hsts_preload_is_off_by_default_and_its_deploy_warning_is_silenced_only_then(tmp_path):
    names = ("SECURE_HSTS_PRELOAD", "SILENCED_SYSTEM_CHECKS")
    assert production_settings(tmp_path, *names) == {
        "SECURE_HSTS_PRELOAD": False,
        "SILENCED_SYSTEM_CHECKS": ["security.W021"],
    }
    assert production_settings(tmp_path, *names, SECURE_HSTS_PRELOAD="true") == {
        "SECURE_HSTS_PRELOAD": True,
        "SILENCED_SYSTEM_CHECKS": [],
    }


def test_the_https_redirect_is_on_in_production_and_can_be_turned_off(tmp_path):
    name = "SECURE_SSL_REDIRECT"
    assert production_settings(tmp_path, name) == {name: True}
    assert production_settings(tmp_path, name, SECURE_SSL_REDIRECT="false") == {name: False}
    assert production_settings(tmp_path, name, DEBUG="true") == {name: False}


@pytest.mark.parametrize(
    "raw",
    ["X-Forwarded-Proto,https", "HTTP_X_FORWARDED_PROTO,https", " x-forwarded-proto , https "],
)
def test_the_proxy_https_header_is_read_as_header_and_value(tmp_path, raw):
    values = production_settings(tmp_path, "SECURE_PROXY_SSL_HEADER", SECURE_PROXY_SSL_HEADER=raw)
    assert values == {"SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"]}


def test_without_a_proxy_https_header_none_is_trusted(tmp_path):
    assert production_settings(tmp_path, "SECURE_PROXY_SSL_HEADER") == {
        "SECURE_PROXY_SSL_HEADER": None
    }


@pytest.mark.parametrize("raw", ["https", "X-Forwarded-Proto,https,http", "X Forwarded,https"])
def test_a_proxy_https_header_that_is_not_header_and_value_stops_the_settings(tmp_path, raw):
    result = import_settings(tmp_path, **PRODUCTION, SECURE_PROXY_SSL_HEADER=raw)
    assert result.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER" in result.stderr


def test_trusted_origins_come_from_the_environment(tmp_path):
    values = production_settings(
        tmp_path,
        "CSRF_TRUSTED_ORIGINS",
        CSRF_TRUSTED_ORIGINS="https://conveyor.example.com, https://ops.example.com:8443",
    )
    assert values == {
        "CSRF_TRUSTED_ORIGINS": ["https://conveyor.example.com", "https://ops.example.com:8443"]
    }


@pytest.mark.parametrize("raw", ["conveyor.example.com", "https://conveyor.example.com/app"])
def test_a_trusted_origin_without_a_scheme_or_with_a_path_stops_the_settings(tmp_path, raw):
    result = import_settings(tmp_path, **PRODUCTION, CSRF_TRUSTED_ORIGINS=raw)
    assert result.returncode != 0
    assert "CSRF_TRUSTED_ORIGINS lists origins such as https://" in result.stderr


def test_the_sign_in_throttle_reads_its_limit_and_lockout_from_the_environment(tmp_path):
    values = production_settings(
        tmp_path,
        "AXES_FAILURE_LIMIT",
        "CONVEYOR_LOGIN_LOCKOUT_MINUTES",
        CONVEYOR_LOGIN_FAILURE_LIMIT="8",
        CONVEYOR_LOGIN_LOCKOUT_MINUTES="30",
    )
    assert values == {"AXES_FAILURE_LIMIT": 8, "CONVEYOR_LOGIN_LOCKOUT_MINUTES": 30}
    result = import_settings(tmp_path, **PRODUCTION, CONVEYOR_LOGIN_FAILURE_LIMIT="0")
    assert "CONVEYOR_LOGIN_FAILURE_LIMIT must be at least 1" in result.stderr


def test_a_bad_token_rate_that_does_not_parse_stops_the_settings(tmp_path):
    result = import_settings(tmp_path, **PRODUCTION, CONVEYOR_API_BAD_TOKEN_RATE="lots")
    assert result.returncode != 0
    assert "CONVEYOR_API_BAD_TOKEN_RATE must look like 60/min" in result.stderr


def test_behind_trusted_proxies_the_client_is_the_address_the_nearest_proxy_saw(rf, settings):
    request = rf.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    settings.CONVEYOR_TRUSTED_PROXIES = 0
    assert client_address(request) == "10.0.0.2"
    settings.CONVEYOR_TRUSTED_PROXIES = 1
    assert client_address(request) == "203.0.113.9"
    settings.CONVEYOR_TRUSTED_PROXIES = 3  # fewer hops than proxies: the header is not trusted
    assert client_address(request) == "10.0.0.2"


@pytest.mark.django_db
def test_with_the_production_values_http_is_redirected_and_https_carries_hsts(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = False
    plain = client.get("/login/")
    assert plain.status_code == 301
    assert plain["Location"] == "https://testserver/login/"
    assert client.get("/healthz").status_code == 200  # probes stay on plain HTTP
    secure = client.get("/login/", secure=True)
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


@pytest.mark.django_db
def test_behind_a_proxy_its_https_header_makes_a_request_secure(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert client.get("/login/", headers={"X-Forwarded-Proto": "https"}).status_code == 200
    assert client.get("/login/", headers={"X-Forwarded-Proto": "http"}).status_code == 301


# --- Security headers on every page ----------------------------------------------------------

# Pages outside the owner's routes (tests/config/test_urls_isolation.py lists those), seen by
# staff: sign-in, the admin, the operations dashboard, the API docs.
OTHER_PAGES = ["login", "admin:index", "admin:login", "admin:executions_execution_changelist",
               "ops:dashboard", "api:docs", "api:schema", "healthz", "metrics"]  # fmt: skip


# Files a run saved, served as downloads with a stricter policy of their own.
DOWNLOADS = {"artifacts:download"}


def assert_security_headers(response):
    policy = response["Content-Security-Policy"]
    assert "script-src 'self';" in policy
    assert "frame-ancestors 'none'" in policy
    assert "'unsafe-eval'" not in policy
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "pattern"), owner_routes(), ids=lambda v: str(v))
def test_every_page_sends_the_security_headers(client, alice, alices_objects, name, pattern):
    client.force_login(alice)
    response = client.get(url_for(name, pattern, alices_objects))
    assert response.status_code in (200, 302, 405), name
    if name in DOWNLOADS:
        # A user's file: never run, framed or sniffed, whatever it holds.
        assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["X-Frame-Options"] == "DENY"
        assert response["Content-Disposition"].startswith("attachment;")
        return
    assert_security_headers(response)


@pytest.mark.django_db
@pytest.mark.parametrize("name", OTHER_PAGES)
def test_sign_in_admin_ops_and_api_pages_send_the_security_headers_too(client, staff, name):
    if name not in ("login", "admin:login"):
        client.force_login(staff)
    response = client.get(reverse(name))
    assert response.status_code == 200, name
    assert_security_headers(response)


@pytest.mark.django_db
def test_the_api_docs_page_loads_its_start_up_script_from_its_own_address(client, staff):
    client.force_login(staff)
    page = client.get(reverse("api:docs")).content.decode()
    assert not re.search(r"<script>", page)
    script = client.get(reverse("api:docs") + "?script=")
    assert script.status_code == 200
    assert "SwaggerUIBundle" in script.content.decode()


def template_files():
    return sorted(TEMPLATES.rglob("*.html"))


def test_there_are_templates_to_check():
    assert TEMPLATES / "base.html" in template_files()


@pytest.mark.parametrize("path", template_files(), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_no_template_runs_inline_script(path):
    """The Content-Security-Policy (script-src 'self', no 'unsafe-eval') would block it: scripts
    are files under static/, and confirmations use data-confirm (static/confirm.js)."""
    text = path.read_text()
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", text), "inline <script>"
    assert not re.search(r"\son[a-z]+\s*=", text), "inline event handler (on...=)"
    assert "javascript:" not in text
    # htmx evaluates trigger filters ("every 1s [cond]"), hx-on and js: values as script.
    assert not re.search(r'hx-trigger="[^"]*\[', text), "htmx trigger filter"
    assert not re.search(r"hx-on|hx-vals=.(js|javascript):", text), "htmx script attribute"


# --- Sign-in throttle ----------------------------------------------------------------------------

LOCKED_OUT = "Too many failed sign-ins for this account from this address; try again in 15 minutes."


def sign_in(client, path, username, password, address="192.0.2.10"):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
def test_after_five_failed_sign_ins_even_the_right_password_is_refused(client, staff, path):
    for _ in range(4):
        response = sign_in(client, path, "sam", "wrong-password")
        assert response.status_code == 200
    locked = sign_in(client, path, "sam", "wrong-password")
    assert locked.status_code == 429
    assert LOCKED_OUT in locked.content.decode()

    refused = sign_in(client, path, "sam", "staff-password")
    assert refused.status_code == 429
    assert LOCKED_OUT in refused.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_the_lockout_holds_for_that_account_from_that_address_only(client, alice, bob):
    for _ in range(5):
        sign_in(client, "/login/", "alice", "wrong-password")
    assert sign_in(client, "/login/", "alice", "alice-password").status_code == 429
    assert sign_in(client, "/login/", "bob", "bob-password").status_code == 302
    client.logout()
    other_address = sign_in(client, "/login/", "alice", "alice-password", address="192.0.2.99")
    assert other_address.status_code == 302


@pytest.mark.django_db
def test_a_successful_sign_in_clears_the_failures(client, alice):
    for _ in range(4):
        sign_in(client, "/login/", "alice", "wrong-password")
    assert sign_in(client, "/login/", "alice", "alice-password").status_code == 302
    client.logout()
    for _ in range(4):
        assert sign_in(client, "/login/", "alice", "wrong-password").status_code == 200
    assert sign_in(client, "/login/", "alice", "alice-password").status_code == 302


@pytest.mark.django_db
def test_sign_ins_without_a_request_are_not_throttled(alice):
    from django.contrib.auth import authenticate

    assert authenticate(username="alice", password="alice-password") == alice


# --- In a browser: the policy blocks nothing the pages need ---------------------------------------


def test_pages_admin_ops_and_api_docs_run_under_the_policy_without_violations(
    staff_page, live_server, staff, make_agent
):
    """Chromium reports every script or style the policy blocks on the console; none may be."""
    agent = make_agent(staff, name="csp-agent")
    execution = execution_request(agent=agent, trigger="manual", input={"n": 1})
    violations: list[str] = []
    staff_page.on(
        "console",
        lambda m: (
            violations.append(f"{staff_page.url}: {m.text}")
            if "Content Security Policy" in m.text
            else None
        ),
    )
    pages = [
        "/",
        f"/agents/{agent.uuid}/",
        f"/agents/{agent.uuid}/schedules/new/",
        f"/executions/{execution.uuid}/",
        "/settings/tokens/",
        "/ops/",
        "/admin/",
        f"/admin/executions/execution/{execution.pk}/change/",
        "/api/v1/docs/",
    ]
    for path in pages:
        staff_page.goto(live_server.url + path)
        staff_page.wait_for_load_state("networkidle")
        if path.startswith(("/agents/", "/executions/", "/ops/")):
            assert staff_page.evaluate("typeof window.htmx") == "object", path
    expect(staff_page.locator(".swagger-ui .info .title")).to_contain_text("Conveyor API")
    assert violations == []


def test_a_confirmation_that_is_declined_sends_nothing(staff_page, live_server, staff):
    """data-confirm (static/confirm.js) replaced the inline onsubmit handlers."""
    _, _plain = token_create(owner=staff, name="ci")
    staff_page.goto(f"{live_server.url}/settings/tokens/")
    staff_page.once("dialog", lambda dialog: dialog.dismiss())
    staff_page.get_by_role("button", name="Revoke").click()
    staff_page.wait_for_timeout(300)
    assert ApiToken.objects.get(owner=staff).revoked_at is None
    staff_page.once("dialog", lambda dialog: dialog.accept())
    staff_page.get_by_role("button", name="Revoke").click()
    staff_page.wait_for_load_state("networkidle")
    assert ApiToken.objects.get(owner=staff).revoked_at is not None


def test_a_hidden_execution_page_polls_every_five_seconds_not_every_second(
    alice_page, live_server, alice, make_agent
):
    """static/execution_detail.js slows the polling of a hidden tab (htmx trigger filters, which
    did it before, are script the policy forbids)."""
    agent = make_agent(alice, name="waiting")
    later = timezone.now() + timedelta(hours=1)
    execution = execution_request(agent=agent, trigger="manual", input={}, not_before=later)
    polls: list[float] = []
    alice_page.on(
        "request", lambda r: polls.append(time.monotonic()) if "/live/" in r.url else None
    )
    alice_page.goto(f"{live_server.url}/executions/{execution.uuid}/")
    alice_page.wait_for_timeout(2600)
    assert len(polls) >= 2  # visible: every second

    alice_page.evaluate("Object.defineProperty(document, 'hidden', {get: () => true})")
    alice_page.wait_for_timeout(300)
    hidden_from = len(polls)
    alice_page.wait_for_timeout(4000)
    assert len(polls) - hidden_from <= 1  # hidden: at most one in five seconds
