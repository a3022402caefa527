"""The registry of agent functions: names, descriptions and input contracts."""

import pytest

from agents.functions import agent_function, get_function
from agents.kinds import get_kind
from agents.kinds.base import InvalidInputError


def test_a_function_declares_the_input_it_expects():
    assert get_function("demo.flaky").input_example == {"fail_times": 2, "seconds": 0}
    kind = get_kind("function")
    assert kind.input_example({"function": "demo.slow"}) == {"seconds": 10, "steps": 10}
    assert kind.input_example({"function": "demo.broken"}) is None
    assert kind.input_example({"function": "no.such"}) is None


def test_an_example_its_own_check_refuses_is_refused_when_registered():
    def positive(value):
        if value.get("n", 0) < 0:
            raise InvalidInputError("n must not be negative")

    with pytest.raises(InvalidInputError, match="negative"):

        @agent_function("tests.bad_example", validate_input=positive, input_example={"n": -1})
        def bad(ctx, input):  # pragma: no cover - never registered
            return input

    assert get_function("tests.bad_example") is None


def test_an_example_must_be_json():
    with pytest.raises(TypeError):

        @agent_function("tests.not_json", input_example={"when": object()})
        def not_json(ctx, input):  # pragma: no cover - never registered
            return input
