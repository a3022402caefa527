"""common/jsonbody.py: one parser for request bodies and for JSON typed into page forms."""

import pytest

from common.errors import Malformed
from common.jsonbody import MAX_JSON_DEPTH, parse_json_bytes, parse_json_text


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"a": NaN}', "malformed_json"),
        ("Infinity", "malformed_json"),
        ("[1e400]", "malformed_json"),
        ("9" * 5000, "malformed_json"),
        ('"\\u0000"', "malformed_json"),
        ('{"\\ud800": 1}', "malformed_json"),
        ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "too_deep"),
        ("[" * 100_000 + "]" * 100_000, "too_deep"),
    ],
)
def test_text_and_bytes_are_refused_alike(text, code):
    for parse in (parse_json_text, lambda t: parse_json_bytes(t.encode())):
        with pytest.raises(Malformed) as info:
            parse(text)
        assert info.value.error_code == code and info.value.message


def test_blank_text_is_no_input():
    assert parse_json_text("") is None
    assert parse_json_text("  \n ") is None


def test_text_is_held_to_the_apis_size_limit(settings):
    settings.CONVEYOR_API_MAX_BODY_BYTES = 10
    assert parse_json_text('"12345678"') == "12345678"
    with pytest.raises(Malformed, match="too large") as info:
        parse_json_text('"123456789"')
    assert info.value.error_code == "too_large"
    # The limit counts UTF-8 bytes, as the API does.
    with pytest.raises(Malformed, match="too large"):
        parse_json_text('"ééééé"')  # 7 characters, 12 bytes


def test_messages_speak_to_a_person_and_to_a_client():
    with pytest.raises(Malformed, match=r"^This is not valid JSON: NaN is not a JSON number\.$"):
        parse_json_text("NaN")
    with pytest.raises(Malformed, match=r"^The body is not valid JSON: Expecting"):
        parse_json_bytes(b"{oops")
    with pytest.raises(Malformed, match="a number too large to represent"):
        parse_json_text("9" * 5000)
