"""The flow kind without a worker: references (parse, render, resolve), the input a flow reads,
the checks a flow's definition passes when it is saved, and the input a run is refused for."""

import pytest
from django.core.exceptions import ValidationError

from agents.kinds.base import ConfigInvalid, InvalidInputError
from agents.kinds.flow import (
    FlowReferenceError,
    input_keys,
    parse_reference,
    references,
    render,
    resolve,
)
from agents.kinds.flow import kind as flow_kind
from agents.services import agent_create, agent_update

SCOPE = {
    "input": {"url": "https://example.com/", "n": 3, "tags": ["a", "b"]},
    "steps": {
        "fetch": {"result": {"body": "hello", "items": [{"id": 7}, {"id": 8}], "ok": True}},
        "count": {"result": 42},
    },
}


# --- References -------------------------------------------------------------------------------


def test_a_reference_is_a_path_into_the_input_or_a_steps_result():
    assert parse_reference(" input.url ") == ["input", "url"]
    assert parse_reference("input") == ["input"]
    assert parse_reference("steps.fetch.result") == ["steps", "fetch", "result"]
    assert parse_reference("steps.fetch.result.items.0.id") == [
        "steps", "fetch", "result", "items", "0", "id",
    ]  # fmt: skip


def test_a_reference_to_a_step_itself_asks_for_its_result():
    with pytest.raises(ValueError, match=r"write \{\{ steps\.fetch\.result \}\}"):
        parse_reference(" steps.fetch ")
    with pytest.raises(ValueError, match=r"steps\.fetch\.result"):
        parse_reference("steps.fetch.body")


def test_a_reference_to_anything_else_says_what_a_reference_starts_with():
    with pytest.raises(ValueError, match="starts with input or steps"):
        parse_reference("secrets.token")


@pytest.mark.parametrize("inside", ["", "  ", "input..url", "input.a b", "input.url|upper"])
def test_text_that_is_not_a_path_is_not_a_reference(inside):
    with pytest.raises(ValueError, match="is not a reference"):
        parse_reference(inside)


def test_references_are_found_in_strings_of_lists_and_object_values_only():
    template = {
        "a": "{{ input.url }}",
        "b": ["x", {"c": "from {{ steps.fetch.result.body }} and {{input.n}}"}],
        "{{ input.key_is_not_read }}": 1,
        "d": 5,
    }

    assert references(template) == [
        ["input", "url"],
        ["steps", "fetch", "result", "body"],
        ["input", "n"],
    ]


def test_a_string_that_is_exactly_one_reference_becomes_the_value_itself():
    assert render("{{ input.n }}", SCOPE) == 3
    assert render("{{steps.fetch.result.items}}", SCOPE) == [{"id": 7}, {"id": 8}]
    assert render("{{ steps.fetch.result.items.1.id }}", SCOPE) == 8
    assert render("{{ steps.fetch.result.ok }}", SCOPE) is True
    assert render("{{ input }}", SCOPE) == SCOPE["input"]


def test_references_inside_longer_text_are_written_into_it_objects_as_json():
    assert render("Got {{ steps.fetch.result.body }}!", SCOPE) == "Got hello!"
    assert render("n={{ input.n }} tags={{ input.tags }}", SCOPE) == 'n=3 tags=["a", "b"]'
    # Spaces around a lone reference make it text.
    assert render(" {{ input.n }}", SCOPE) == " 3"


def test_a_template_keeps_its_shape_and_what_has_no_reference():
    template = {"url": "{{ input.url }}", "list": [1, None, "{{ steps.count.result }}"], "f": 1.5}

    assert render(template, SCOPE) == {
        "url": "https://example.com/",
        "list": [1, None, 42],
        "f": 1.5,
    }
    assert render(None, SCOPE) is None
    assert render("no braces", SCOPE) == "no braces"


def test_a_missing_path_is_named_with_where_it_stopped():
    with pytest.raises(FlowReferenceError) as caught:
        render({"x": "{{ steps.fetch.result.headers }}"}, SCOPE)
    message = str(caught.value)
    assert message.startswith("{{ steps.fetch.result.headers }}:")
    assert "result of step “fetch” has no “headers”" in message

    with pytest.raises(FlowReferenceError, match="has no “url”"):
        resolve(["input", "url"], {"input": None, "steps": {}})
    with pytest.raises(FlowReferenceError, match=r"has no “items\.5”"):
        render("{{ steps.fetch.result.items.5 }}", SCOPE)
    with pytest.raises(FlowReferenceError, match=r"has no “items\.first”"):
        render("{{ steps.fetch.result.items.first }}", SCOPE)


def test_a_step_without_a_result_yet_is_named():
    with pytest.raises(FlowReferenceError, match="step “later” has no result yet"):
        render("{{ steps.later.result }}", SCOPE)


# --- The input a flow reads -------------------------------------------------------------------


CONFIG = {
    "steps": [
        {"key": "a", "agent": "x", "input": {"u": "{{ input.url }}", "s": "{{ steps.z.result }}"}},
        {"key": "w", "wait": {"until": "{{ input.when }}"}},
        {
            "key": "g",
            "parallel": [
                {"key": "m1", "agent": "x", "input": ["{{ input.url }}", "{{ input.to }}"]},
                {"key": "m2", "agent": "x", "input": "{{ broken"},
                {"key": "m3", "agent": "x", "input": "{{ nonsense.x }}"},
            ],
        },
    ]
}


def test_the_input_keys_are_the_top_level_keys_the_steps_read_in_order_of_first_use():
    assert input_keys(CONFIG) == ["url", "when", "to"]
    assert input_keys({"steps": [{"key": "a", "agent": "x", "input": "{{ input }}"}]}) == []
    assert input_keys({}) == []


def test_a_run_is_refused_an_input_that_lacks_what_the_steps_read():
    flow_kind.validate_input(CONFIG, {"url": "u", "when": "w", "to": "t", "extra": 1})

    with pytest.raises(InvalidInputError) as caught:
        flow_kind.validate_input(CONFIG, {"url": "u"})
    assert caught.value.message == "The input lacks “when”, “to”, which this flow's steps read."

    with pytest.raises(InvalidInputError) as caught:
        flow_kind.validate_input(CONFIG, ["u"])
    assert "“url”, “when”, “to”" in caught.value.message
    assert "give a JSON object" in caught.value.message


def test_a_flow_that_reads_no_input_takes_any():
    config = {"steps": [{"key": "a", "agent": "x", "input": {"n": 1}}]}
    for anything in (None, 5, "text", {"a": 1}):
        flow_kind.validate_input(config, anything)
    assert flow_kind.input_example(config) is None
    assert flow_kind.input_example(CONFIG) == {"url": "…", "when": "…", "to": "…"}


# --- Saving a flow ------------------------------------------------------------------------------


@pytest.fixture
def echo(make_agent):
    return make_agent(name="Echo")


@pytest.fixture
def flow(make_agent, echo):
    """A saved flow of alice's (the agent the checks run for)."""
    return make_agent(
        name="the flow", kind="flow", config={"steps": [{"key": "a", "agent": "Echo"}]}
    )


def errors_of(config, *, agent):
    with pytest.raises(ConfigInvalid) as caught:
        flow_kind.clean_config(config, agent=agent)
    return caught.value.errors


def run(key, agent="Echo", **fields):
    return {"key": key, "agent": agent, **fields}


@pytest.mark.django_db
def test_a_step_agent_given_by_name_in_any_case_is_stored_as_its_uuid(flow, echo):
    cleaned = flow_kind.clean_config(
        {
            "steps": [
                run("a", "echo"),
                {"wait": {"seconds": 5}},
                {"key": "g", "parallel": [run("m", str(echo.uuid))]},
            ],
            "retry": {},
        },
        agent=flow,
    )

    assert cleaned["steps"][0] == {"key": "a", "agent": str(echo.uuid)}
    assert cleaned["steps"][1] == {"key": "wait-2", "wait": {"seconds": 5}}
    assert cleaned["steps"][2]["parallel"] == [{"key": "m", "agent": str(echo.uuid)}]
    assert (cleaned["result"], cleaned["timeout"], cleaned["retry"]) == ("last", None, None)
    # What was stored passes again unchanged.
    assert flow_kind.clean_config(cleaned, agent=flow) == cleaned


@pytest.mark.django_db
def test_a_reference_to_an_unknown_step_names_the_steps_it_can_read(flow):
    errors = errors_of(
        {"steps": [run("a"), run("b", input={"x": "{{ steps.nope.result }}"})]}, agent=flow
    )

    assert errors == {
        "steps.1.input": [
            "{{ steps.nope.result }}: there is no step “nope” (steps whose results it can read: a)."
        ]
    }


@pytest.mark.django_db
def test_a_reference_to_a_later_step_says_it_does_not_come_before(flow):
    errors = errors_of(
        {"steps": [run("a", input={"x": "{{ steps.c.result.y }}"}), run("b"), run("c")]},
        agent=flow,
    )

    assert errors == {
        "steps.0.input": [
            "{{ steps.c.result.y }}: step “c” does not come before this one (steps whose "
            "results it can read: none)."
        ]
    }


@pytest.mark.django_db
def test_a_step_cannot_read_its_own_result_nor_a_group_member_its_siblings(flow):
    errors = errors_of(
        {
            "steps": [
                run("a", input="{{ steps.a.result }}"),
                {
                    "key": "g",
                    "parallel": [
                        run("m1", input="{{ steps.m2.result }}"),
                        run("m2", input={"x": "{{ steps.m1.result }}"}),
                    ],
                },
                run("after", input=["{{ steps.m1.result }}", "{{ steps.g.result.m2 }}"]),
            ]
        },
        agent=flow,
    )

    assert set(errors) == {"steps.0.input", "steps.1.parallel.0.input", "steps.1.parallel.1.input"}
    assert "step “a” does not come before this one" in errors["steps.0.input"][0]
    assert errors["steps.1.parallel.1.input"] == [
        "{{ steps.m1.result }}: step “m1” runs at the same time (same parallel group) (steps "
        "whose results it can read: a)."
    ]
    assert "step “m2” runs at the same time" in errors["steps.1.parallel.0.input"][0]


@pytest.mark.django_db
def test_a_malformed_reference_is_refused_where_it_is(flow):
    errors = errors_of({"steps": [run("a", input={"x": "{{ steps.a }}"})]}, agent=flow)

    assert "write {{ steps.a.result }}" in errors["steps.0.input"][0]


@pytest.mark.django_db
def test_a_step_agent_that_does_not_exist_is_named(flow):
    errors = errors_of({"steps": [run("a", "Ghost"), run("b", ""), {"key": "c"}]}, agent=flow)

    assert errors["steps.0.agent"] == ["You have no agent “Ghost”."]
    assert errors["steps.1.agent"] == ["Choose the agent this step runs (its name or UUID)."]
    assert errors["steps.2.agent"] == ["Choose the agent this step runs (its name or UUID)."]


@pytest.mark.django_db
def test_another_owners_agent_is_not_found_by_name_or_uuid(flow, make_agent, bob):
    bobs = make_agent(owner=bob, name="Bobs echo")

    errors = errors_of({"steps": [run("a", "Bobs echo"), run("b", str(bobs.uuid))]}, agent=flow)

    assert errors["steps.0.agent"] == ["You have no agent “Bobs echo”."]
    assert errors["steps.1.agent"] == [f"You have no agent “{bobs.uuid}”."]


@pytest.mark.django_db
def test_a_flow_cannot_run_itself(flow):
    errors = errors_of({"steps": [run("a", "the flow")]}, agent=flow)

    assert errors == {"steps.0.agent": ["A flow cannot run itself."]}


@pytest.mark.django_db
def test_a_flow_that_would_run_itself_through_another_is_refused_naming_the_loop(flow, make_agent):
    outer = make_agent(name="outer", kind="flow", config={"steps": [run("x", "the flow")]})

    errors = errors_of({"steps": [run("a"), run("b", "outer")]}, agent=flow)

    assert errors == {
        "steps.1.agent": [
            "“outer” runs this flow (through outer → the flow), so it would run itself forever."
        ]
    }
    # Saved through the service, the message is under the config's field.
    with pytest.raises(ValidationError) as caught:
        agent_update(agent=flow, config={"steps": [run("b", str(outer.uuid))]})
    assert "config.steps.0.agent" in caught.value.message_dict


@pytest.mark.django_db
def test_flows_nest_at_most_the_configured_depth(make_agent, echo, alice, settings):
    assert settings.CONVEYOR_FLOW_MAX_DEPTH == 3
    level1 = make_agent(name="level1", kind="flow", config={"steps": [run("a")]})
    level2 = make_agent(name="level2", kind="flow", config={"steps": [run("a", "level1")]})
    # A flow running level2 nests three deep: allowed.
    make_agent(name="level3", kind="flow", config={"steps": [run("a", "level2")]})

    with pytest.raises(ValidationError) as caught:
        make_agent(name="level4", kind="flow", config={"steps": [run("a", "level3")]})

    message = caught.value.message_dict["config.steps.0.agent"][0]
    assert message.startswith("Flows nest at most 3 deep")
    assert "level3 → level2 → level1" in message
    assert level1.pk and level2.pk


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("retry", "problem"),
    [
        ({"max_retries": 11}, "“max_retries” is a whole number from 0 to 10."),
        ({"max_retries": -1}, "“max_retries” is a whole number from 0 to 10."),
        ({"max_retries": True}, "“max_retries” is a whole number from 0 to 10."),
        ({"max_retries": 1.5}, "“max_retries” is a whole number from 0 to 10."),
        ({"backoff": 10**9}, "“backoff” is a whole number from 0 to"),
        ({"enabled": "yes"}, "“enabled” is true or false."),
        ({"jitter": 1}, "“jitter” is true or false."),
        ({"tries": 2, "wait": 1}, "Unknown retry settings: tries, wait (use enabled, "),
        ([1], "Retry settings are a JSON object"),
    ],
)
def test_a_bad_retry_override_is_refused_on_the_step_and_on_the_flow(flow, retry, problem):
    on_step = errors_of({"steps": [run("a"), run("b", retry=retry)]}, agent=flow)
    on_flow = errors_of({"steps": [run("a")], "retry": retry}, agent=flow)

    assert list(on_step) == ["steps.1.retry"]
    assert on_step["steps.1.retry"][0].startswith(problem)
    assert list(on_flow) == ["retry"]
    assert on_flow["retry"][0].startswith(problem)


@pytest.mark.django_db
def test_a_good_retry_override_is_kept_and_an_empty_one_dropped(flow):
    retry = {"enabled": True, "max_retries": 0, "backoff": 5, "backoff_max": 60, "jitter": False}
    cleaned = flow_kind.clean_config(
        {"steps": [run("a", retry=retry), run("b", retry={})], "retry": {"max_retries": 10}},
        agent=flow,
    )

    assert cleaned["steps"][0]["retry"] == retry
    assert "retry" not in cleaned["steps"][1]
    assert cleaned["retry"] == {"max_retries": 10}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("wait", "problem"),
    [
        ({"seconds": 0}, "“seconds” is a whole number from 1 to"),
        ({"seconds": 1.5}, "“seconds” is a whole number from 1 to"),
        ({"seconds": "60"}, "“seconds” is a whole number from 1 to"),
        ({"seconds": 10**9}, "“seconds” is a whole number from 1 to"),
        ({"minutes": 5}, 'A wait is {"seconds": 60} or'),
        ({"seconds": 5, "until": "2030-01-01T00:00:00Z"}, 'A wait is {"seconds": 60} or'),
        (60, 'A wait is {"seconds": 60} or'),
        ({"until": ""}, "“until” is a time (ISO 8601) or a reference to one."),
        ({"until": "next tuesday"}, "“next tuesday” is not a time: write it as"),
        ({"until": "{{ steps.later.result.at }}"}, "there is no step “later”"),
    ],
)
def test_a_bad_wait_is_refused_saying_what_a_wait_is(flow, wait, problem):
    errors = errors_of({"steps": [run("a"), {"key": "w", "wait": wait}]}, agent=flow)

    assert list(errors) == ["steps.1.wait"]
    assert errors["steps.1.wait"][0].startswith(problem) or problem in errors["steps.1.wait"][0]


@pytest.mark.django_db
def test_a_wait_may_read_the_time_from_an_earlier_step_or_give_it(flow):
    cleaned = flow_kind.clean_config(
        {
            "steps": [
                run("a"),
                {"wait": {"until": "{{ steps.a.result.at }}"}},
                {"key": "w", "wait": {"until": "2030-01-01T09:00:00+02:00"}},
                run("b", input="{{ steps.wait-2.result }}"),
            ]
        },
        agent=flow,
    )

    assert [s["key"] for s in cleaned["steps"]] == ["a", "wait-2", "w", "b"]


@pytest.mark.django_db
def test_keys_are_unique_in_the_flow_groups_and_members_alike(flow):
    errors = errors_of(
        {
            "steps": [
                run("a"),
                run("a"),
                {"key": "g", "parallel": [run("g"), run("m")]},
                run("m"),
                {"key": "a", "wait": {"seconds": 1}},
            ]
        },
        agent=flow,
    )

    assert errors["steps.1.key"] == ["Another step already has the key “a”."]
    assert errors["steps.2.parallel.0.key"] == ["Another step already has the key “g”."]
    assert errors["steps.3.key"] == ["Another step already has the key “m”."]
    assert errors["steps.4.key"] == ["Another step already has the key “a”."]


@pytest.mark.django_db
@pytest.mark.parametrize("key", [None, "", "has space", "x" * 65, 5, "dot.ted"])
def test_a_run_step_needs_a_key_of_letters_digits_dashes_and_underscores(flow, key):
    step = {"agent": "Echo"} if key is None else run(key)

    errors = errors_of({"steps": [step]}, agent=flow)

    assert errors["steps.0.key"][0].startswith("Give the step a key: 1 to 64 letters")


@pytest.mark.django_db
def test_the_shape_of_steps_and_groups_is_checked(flow):
    errors = errors_of(
        {
            "steps": [
                "fetch",
                run("a", agnt="x", retries=1),
                {"key": "g", "parallel": []},
                {"key": "h", "parallel": [{"key": "w", "wait": {"seconds": 1}}, run("ok")]},
                {"key": "i", "parallel": [run(f"m{n}") for n in range(21)]},
            ]
        },
        agent=flow,
    )

    assert errors["steps.0"] == ["Step 1 is not a JSON object."]
    assert errors["steps.1"] == ["Unknown fields: agnt, retries."]
    assert errors["steps.2.parallel"] == ["A parallel group is a list of 1 to 20 run steps."]
    assert errors["steps.3.parallel.0"] == [
        "A member of a parallel group runs an agent (no waits or groups)."
    ]
    assert errors["steps.4.parallel"] == ["A parallel group is a list of 1 to 20 run steps."]
    assert "steps.3.parallel.1.agent" not in errors


@pytest.mark.django_db
@pytest.mark.parametrize("steps", [None, [], {}, {"key": "a"}, 5])
def test_a_flow_has_at_least_one_step(flow, steps):
    errors = errors_of({"steps": steps}, agent=flow)

    assert errors == {"steps": ["Give at least one step: a JSON list of steps."]}


@pytest.mark.django_db
def test_a_flow_has_at_most_fifty_steps(flow):
    errors = errors_of({"steps": [run(f"s{n}") for n in range(51)]}, agent=flow)

    assert errors == {"steps": ["A flow has at most 50 steps."]}


@pytest.mark.django_db
def test_the_time_limit_and_the_result_are_checked(flow, settings):
    errors = errors_of(
        {
            "steps": [run("a")],
            "timeout": settings.CONVEYOR_FLOW_MAX_TIMEOUT + 1,
            "result": "first",
        },
        agent=flow,
    )

    assert errors["timeout"] == [
        f"At most {settings.CONVEYOR_FLOW_MAX_TIMEOUT} seconds on this installation."
    ]
    assert "first" in errors["result"][0]
    assert "timeout" in errors_of({"steps": [run("a")], "timeout": 0}, agent=flow)


@pytest.mark.django_db
def test_the_steps_may_be_given_as_json_text_like_the_page_sends_them(flow, echo):
    cleaned = flow_kind.clean_config(
        {"steps": '[{"key": "a", "agent": "Echo"}]', "retry": '{"max_retries": 1}'}, agent=flow
    )

    assert cleaned["steps"] == [{"key": "a", "agent": str(echo.uuid)}]
    assert cleaned["retry"] == {"max_retries": 1}
    assert errors_of({"steps": "[{"}, agent=flow)["steps"][0].startswith("This is not valid JSON")


@pytest.mark.django_db
def test_a_flow_saved_through_the_service_reports_errors_under_config(alice, echo):
    with pytest.raises(ValidationError) as caught:
        agent_create(
            owner=alice,
            name="f",
            kind="flow",
            config={
                "steps": [
                    run("a"),
                    run("b", input={"x": "{{ steps.zz.result }}"}),
                    {"key": "g", "parallel": [run("m", "Nobody")]},
                ],
            },
        )
    assert set(caught.value.message_dict) == {
        "config.steps.1.input",
        "config.steps.2.parallel.0.agent",
    }

    with pytest.raises(ValidationError) as caught:
        agent_create(owner=alice, name="f", kind="flow", config={"steps": [run("a")], "timeout": 0})
    assert set(caught.value.message_dict) == {"config.timeout"}


@pytest.mark.django_db
def test_the_summary_names_each_step_and_its_agent(flow, echo):
    config = flow_kind.clean_config(
        {
            "steps": [run("a"), {"wait": {"seconds": 90}}, {"key": "g", "parallel": [run("m")]}],
            "timeout": 600,
            "result": "all",
        },
        agent=flow,
    )

    lines = dict(flow_kind.summary(config))

    assert lines["Step 1"] == "a: run “Echo”"
    assert lines["Step 2"].startswith("wait-2: wait ")
    assert lines["Step 3"] == "g: in parallel: m (Echo)"
    assert lines["Time limit"] == "600 s for the whole flow"
    assert lines["Result"] == "Every step's result, by key"
