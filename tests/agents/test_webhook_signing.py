"""Signature checking, as the Standard Webhooks spec says: HMAC-SHA256 over
"{id}.{timestamp}.{body}", whsec_ secrets, v1 signatures, a 5-minute tolerance, constant-time
comparison, two secrets during a rotation."""

import base64
import hashlib
import hmac
import inspect
import time

import pytest
from standardwebhooks import Webhook

from agents import webhook_signing
from agents.webhook_signing import (
    BadHeaders,
    BadSignature,
    generate_secret,
    sign,
    verify,
)
from tests.conftest import standard_sign

NOW = 1_800_000_000
BODY = b'{"order": 42, "note": "caf\xc3\xa9"}'


def headers(secret, *, msg_id="msg_1", timestamp=NOW, body=BODY, signature=None):
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature or standard_sign(secret, msg_id, timestamp, body),
    }


def test_a_secret_is_whsec_and_32_random_bytes_in_base64():
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert generate_secret() != secret


def test_conveyors_signature_is_the_reference_librarys():
    secret = generate_secret()
    assert sign(secret=secret, msg_id="msg_1", timestamp=NOW, body=BODY) == standard_sign(
        secret, "msg_1", NOW, BODY
    )


def test_the_signature_is_hmac_sha256_over_id_timestamp_and_body():
    secret = generate_secret()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, b"msg_1.%d." % NOW + BODY, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(digest).decode()
    assert verify(secrets={"current": secret}, headers=headers(secret, signature=expected),
                  body=BODY, now=NOW).msg_id == "msg_1"  # fmt: skip


def test_a_request_signed_by_the_reference_library_is_accepted():
    secret = generate_secret()
    message = verify(secrets={"current": secret}, headers=headers(secret), body=BODY, now=NOW)
    assert (message.msg_id, message.timestamp, message.matched) == ("msg_1", NOW, "current")


def test_the_reference_library_accepts_what_conveyor_signs():
    # The other direction: Conveyor's signer (used in its examples) satisfies the reference.
    secret = generate_secret()
    now = int(time.time())  # the reference checks against the real clock
    signature = sign(secret=secret, msg_id="msg_1", timestamp=now, body=BODY)
    Webhook(secret).verify(
        BODY, {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": signature}
    )


def test_one_matching_signature_among_several_is_enough():
    secret, other = generate_secret(), generate_secret()
    good = standard_sign(secret, "msg_1", NOW, BODY)
    wrong = standard_sign(other, "msg_1", NOW, BODY)
    several = f"v1a,c29tZXRoaW5n {wrong} v1,!!notbase64!! {good}"
    assert verify(secrets={"current": secret}, headers=headers(secret, signature=several),
                  body=BODY, now=NOW)  # fmt: skip


def test_during_a_rotation_both_secrets_are_valid_and_it_says_which_matched():
    current, upcoming = generate_secret(), generate_secret()
    both = {"current": current, "next": upcoming}
    assert verify(secrets=both, headers=headers(current), body=BODY, now=NOW).matched == "current"
    assert verify(secrets=both, headers=headers(upcoming), body=BODY, now=NOW).matched == "next"


@pytest.mark.parametrize(
    "tamper",
    [
        {"body": b'{"order": 43}'},
        {"msg_id": "msg_2"},
        {"timestamp": NOW + 1},
    ],
)
def test_changing_the_body_id_or_timestamp_breaks_the_signature(tamper):
    secret = generate_secret()
    sent = headers(secret)
    body = tamper.get("body", BODY)
    if "msg_id" in tamper:
        sent["webhook-id"] = tamper["msg_id"]
    if "timestamp" in tamper:
        sent["webhook-timestamp"] = str(tamper["timestamp"])
    with pytest.raises(BadSignature) as caught:
        verify(secrets={"current": secret}, headers=sent, body=body, now=NOW)
    assert caught.value.code == "signature_invalid"


def test_a_signature_made_with_another_secret_is_refused_without_revealing_ours():
    secret, other = generate_secret(), generate_secret()
    with pytest.raises(BadSignature) as caught:
        verify(secrets={"current": secret}, headers=headers(other), body=BODY, now=NOW)
    assert secret not in caught.value.message
    assert secret.removeprefix("whsec_") not in caught.value.message


@pytest.mark.parametrize(("offset", "ok"), [(-299, True), (299, True), (-301, False), (301, False)])
def test_timestamps_more_than_five_minutes_off_are_refused_either_way(offset, ok):
    secret = generate_secret()
    sent = headers(secret, timestamp=NOW + offset)
    if ok:
        assert verify(secrets={"current": secret}, headers=sent, body=BODY, now=NOW)
    else:
        with pytest.raises(BadSignature) as caught:
            verify(secrets={"current": secret}, headers=sent, body=BODY, now=NOW)
        assert caught.value.code == "timestamp_out_of_tolerance"


@pytest.mark.parametrize(
    ("change", "error", "code"),
    [
        ({"webhook-signature": ""}, BadSignature, "signature_missing"),
        ({"webhook-signature": "v2,abc"}, BadSignature, "signature_invalid"),
        ({"webhook-signature": "v1,"}, BadSignature, "signature_invalid"),
        ({"webhook-id": ""}, BadHeaders, "missing_headers"),
        ({"webhook-timestamp": ""}, BadHeaders, "missing_headers"),
        ({"webhook-timestamp": "soon"}, BadHeaders, "bad_headers"),
        ({"webhook-timestamp": "1.5"}, BadHeaders, "bad_headers"),
        ({"webhook-timestamp": "9" * 40}, BadHeaders, "bad_headers"),
        ({"webhook-id": "has space"}, BadHeaders, "bad_headers"),
        ({"webhook-id": "x" * 201}, BadHeaders, "bad_headers"),
    ],
)
def test_missing_or_malformed_headers_are_refused_with_a_reason(change, error, code):
    secret = generate_secret()
    sent = {**headers(secret), **change}
    with pytest.raises(error) as caught:
        verify(secrets={"current": secret}, headers=sent, body=BODY, now=NOW)
    assert caught.value.code == code


def test_an_agent_without_a_secret_accepts_nothing():
    secret = generate_secret()
    with pytest.raises(BadSignature):
        verify(secrets={}, headers=headers(secret), body=BODY, now=NOW)


def test_signatures_are_compared_in_constant_time():
    # The comparison is hmac.compare_digest (constant time); this guards against a refactor
    # to == (a timing oracle for forging signatures byte by byte).
    source = inspect.getsource(webhook_signing.verify)
    assert "hmac.compare_digest" in source
    assert "expected ==" not in source and "== expected" not in source
