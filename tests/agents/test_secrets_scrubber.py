"""agents.secrets.Scrubber: the one rule that takes secrets out of what Conveyor keeps (the
runner, with the agent's secret values) and hands out (the support bundle, which also removes
what looks like a secret)."""

import pytest

from agents.secrets import Scrubber, looks_like_secret_name

REMOVED = "[secret removed]"


@pytest.fixture
def bundle_scrubber():
    return Scrubber(["s3cr3t-value-XYZ", "abc"], replacement=REMOVED, lookalikes=True)


def test_the_runner_s_scrubber_masks_the_values_only():
    scrubber = Scrubber(["s3cr3t-value-XYZ", "s3cr3t"])

    assert scrubber.text("got s3cr3t-value-XYZ and s3cr3t") == "got *** and ***"
    # What merely looks secret is the agent's own business in its logs.
    assert scrubber.text("Authorization: Bearer abc.def-123456") == (
        "Authorization: Bearer abc.def-123456"
    )
    assert scrubber.json({"password": "pw-1", "n": 5}) == {"password": "pw-1", "n": 5}


def test_values_shorter_than_four_characters_are_not_looked_for(bundle_scrubber):
    assert bundle_scrubber.text("abcdef") == "abcdef"


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("leaked s3cr3t-value-XYZ here", f"leaked {REMOVED} here"),
        ("Authorization: Bearer abc.def-123456", f"Authorization: {REMOVED}"),
        ("sent Bearer abc.def-123456 to it", f"sent Bearer {REMOVED} to it"),
        ("Basic authentication failed", "Basic authentication failed"),
        ("https://x.io/a?token=abcdef123&x=1", f"https://x.io/a?token={REMOVED}&x=1"),
        ("login with password=hunter2 failed", f"login with password={REMOVED} failed"),
        ("postgres://u:pa55word@db/x", f"postgres://u:{REMOVED}@db/x"),
        ('{"api_key": "zz\\"yy", "name": "n"}', f'{{"api_key": "{REMOVED}", "name": "n"}}'),
        ("X-Api-Key: k-12345\nAccept: */*", f"X-Api-Key: {REMOVED}\nAccept: */*"),
        ("token cvy_abcdefghijkl1", f"token {REMOVED}"),
        ("eyJhbGciOiJI.eyJzdWIiOiIx.SflKxwRJSMeKKF2Q", REMOVED),
        ("The endpoint answered 500.", "The endpoint answered 500."),
    ],
)
def test_the_bundle_s_scrubber_removes_what_looks_secret(bundle_scrubber, text, scrubbed):
    assert bundle_scrubber.text(text) == scrubbed


def test_json_fields_with_secret_names_lose_their_string_values(bundle_scrubber):
    value = {
        "headers": {"X-Api-Key": "plain", "Accept": "json", "Idempotency-Key": "conveyor-1"},
        "steps": [{"key": "fetch"}],
        "client_secret": "cs-1",
        "tokens": 1250,
        "n": "s3cr3t-value-XYZ",
    }

    assert bundle_scrubber.json(value) == {
        "headers": {"X-Api-Key": REMOVED, "Accept": "json", "Idempotency-Key": "conveyor-1"},
        "steps": [{"key": "fetch"}],
        "client_secret": REMOVED,
        "tokens": 1250,
        "n": REMOVED,
    }


def test_a_number_that_shows_a_secret_is_removed():
    assert Scrubber(["20261130"]).json({"n": 20261130, "m": 7}) == {"n": "***", "m": 7}


@pytest.mark.parametrize(
    "name", ["Authorization", "Cookie", "X-Api-Key", "access_token", "client_secret", "PASSWORD"]
)
def test_names_that_look_secret(name):
    assert looks_like_secret_name(name)


@pytest.mark.parametrize("name", ["key", "Idempotency-Key", "step_key", "Accept", "url"])
def test_names_that_do_not(name):
    assert not looks_like_secret_name(name)
