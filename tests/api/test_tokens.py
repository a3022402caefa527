"""API tokens: made on a page of one's own, shown once, kept as a hash, revocable; the API
accepts them as ``Bearer`` (or ``Token``) and browsers with their session and CSRF token."""

import hashlib
import uuid
from datetime import timedelta

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from api.models import ApiToken
from api.services import token_create, token_revoke, token_touch
from tests.conftest import error_of

from .conftest import ApiClient

pytestmark = pytest.mark.django_db

AGENTS = "/api/v1/agents"


def test_a_token_is_shown_once_on_creation_and_stored_only_as_a_hash(client, alice):
    client.force_login(alice)
    response = client.post(reverse("tokens:list"), {"name": "deploys"})
    assert response.status_code == 200
    token = ApiToken.objects.get(owner=alice)
    plain = response.context["new_token"]["plain"]
    assert plain.startswith("cvy_") and plain in response.content.decode()
    assert token.token_hash == hashlib.sha256(plain.encode()).hexdigest()
    assert token.prefix == plain[:12]
    assert plain not in str(ApiToken.objects.filter(pk=token.pk).values().get())
    page = client.get(reverse("tokens:list")).content.decode()
    assert plain not in page
    assert token.prefix in page and "deploys" in page


def test_the_token_works_at_once_with_bearer_and_with_token(alice):
    _, plain = token_create(owner=alice, name="ci")
    for keyword in ("Bearer", "Token", "bearer"):
        response = Client(headers={"Authorization": f"{keyword} {plain}"}).get(AGENTS)
        assert response.status_code == 200, (keyword, response.content)


def test_a_revoked_token_stops_working(client, alice):
    token, plain = token_create(owner=alice, name="old")
    client.force_login(alice)
    response = client.post(reverse("tokens:revoke", args=[token.uuid]))
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    response = ApiClient(plain).get(AGENTS)
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_token"


def test_a_name_in_use_is_refused_until_that_token_is_revoked(client, alice):
    client.force_login(alice)
    client.post(reverse("tokens:list"), {"name": "ci"})
    response = client.post(reverse("tokens:list"), {"name": "ci"})
    assert response.status_code == 422
    assert "already have a token with this name" in response.content.decode()
    token_revoke(token=ApiToken.objects.get(owner=alice))
    assert client.post(reverse("tokens:list"), {"name": "ci"}).status_code == 200


@pytest.mark.parametrize(
    "header",
    ["Bearer cvy_not-a-real-token", "Bearer", "Bearer a b", "Token x", "Bearer cvy_\u00e9t\u00e9"],
)
def test_a_wrong_token_is_a_401_that_says_so(header):
    response = Client(headers={"Authorization": header}).get(AGENTS)
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_token"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_no_credentials_is_a_401_asking_for_a_bearer_token(anonymous_api):
    response = anonymous_api.get(AGENTS)
    assert response.status_code == 401
    assert error_of(response)["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_an_inactive_users_token_is_refused(alice, make_token):
    plain = make_token(alice)
    alice.is_active = False
    alice.save()
    assert ApiClient(plain).get(AGENTS).status_code == 401


def test_last_used_is_written_at_most_once_a_minute(alice):
    token, plain = token_create(owner=alice, name="ci")
    assert token.last_used_at is None
    ApiClient(plain).get(AGENTS)
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None
    ApiClient(plain).get(AGENTS)
    token.refresh_from_db()
    assert token.last_used_at == first
    # A minute later the next use is recorded.
    assert token_touch(token=token, at=first + timedelta(seconds=30)) is False
    assert token_touch(token=token, at=first + timedelta(seconds=61)) is True
    token.refresh_from_db()
    assert token.last_used_at == first + timedelta(seconds=61)


def test_a_browser_session_works_and_needs_its_csrf_token(alice, make_agent):
    agent = make_agent(alice)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    assert browser.get(AGENTS).status_code == 200
    url = f"{AGENTS}/{agent.uuid}/pause"
    refused = browser.post(url, content_type="application/json")
    assert refused.status_code == 403
    assert error_of(refused)["code"] == "forbidden"
    browser.get(reverse("tokens:list"))  # sets the CSRF cookie
    csrf = browser.cookies["csrftoken"].value
    accepted = browser.post(url, content_type="application/json", headers={"X-CSRFToken": csrf})
    assert accepted.status_code == 200
    assert accepted.json()["is_paused"] is True


def test_a_token_needs_no_csrf_token(api, make_agent, alice):
    agent = make_agent(alice)
    api.client = Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {api.token}"})
    assert api.post(f"{AGENTS}/{agent.uuid}/pause").status_code == 200


def test_someone_elses_token_cannot_be_revoked(client, alice, bob):
    token, _ = token_create(owner=alice, name="ci")
    client.force_login(bob)
    assert client.post(reverse("tokens:revoke", args=[token.uuid])).status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_the_token_page_lists_only_ones_own_tokens(client, alice, bob):
    token_create(owner=alice, name="alices-ci")
    client.force_login(bob)
    assert "alices-ci" not in client.get(reverse("tokens:list")).content.decode()


def test_the_user_menu_links_to_the_token_page(client, alice):
    client.force_login(alice)
    assert reverse("tokens:list") in client.get(reverse("home")).content.decode()


def test_staff_see_tokens_in_the_admin_with_the_hash_read_only_and_can_revoke(client, staff, alice):
    token, plain = token_create(owner=alice, name="ci")
    client.force_login(staff)
    change = client.get(reverse("admin:api_apitoken_change", args=[token.pk]))
    assert change.status_code == 200
    page = change.content.decode()
    assert token.token_hash in page and plain not in page
    assert 'name="token_hash"' not in page  # shown, not editable
    assert client.get(reverse("admin:api_apitoken_add")).status_code == 403
    client.post(
        reverse("admin:api_apitoken_changelist"),
        {"action": "revoke", "_selected_action": [token.pk]},
    )
    token.refresh_from_db()
    assert token.revoked_at is not None


# --- Guessing tokens is throttled per address -----------------------------------------------


def an_address() -> str:
    """An address of the test's own: the counts live in Redis, which outlasts a test."""
    return f"fd00::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


def from_address(address, token):
    return Client(headers={"Authorization": f"Bearer {token}"}, REMOTE_ADDR=address)


@override_settings(CONVEYOR_API_BAD_TOKEN_RATE="3/day")
def test_repeated_bad_tokens_from_one_address_get_a_429_with_retry_after():
    address = an_address()
    for attempt in range(3):
        response = from_address(address, f"cvy_guess-{attempt}").get(AGENTS)
        assert response.status_code == 401
    refused = from_address(address, "cvy_guess-4").get(AGENTS)
    assert refused.status_code == 429
    assert error_of(refused)["code"] == "rate_limited"
    assert "token that is not valid from this address" in error_of(refused)["message"]
    assert 1 <= int(refused["Retry-After"]) <= 86400


@override_settings(CONVEYOR_API_BAD_TOKEN_RATE="2/day")
def test_a_refused_address_is_refused_even_with_a_valid_token_and_others_are_not(alice):
    _, plain = token_create(owner=alice, name="ci")
    address = an_address()
    for attempt in range(3):
        from_address(address, f"cvy_guess-{attempt}").get(AGENTS)
    assert from_address(address, plain).get(AGENTS).status_code == 429
    assert from_address(an_address(), plain).get(AGENTS).status_code == 200


@override_settings(CONVEYOR_API_BAD_TOKEN_RATE="2/day")
def test_requests_with_a_valid_token_are_not_counted(alice):
    _, plain = token_create(owner=alice, name="ci")
    address = an_address()
    for _ in range(5):
        assert from_address(address, plain).get(AGENTS).status_code == 200
    assert from_address(address, "cvy_guess").get(AGENTS).status_code == 401
