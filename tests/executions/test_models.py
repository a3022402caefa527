"""Execution.status_label counts attempts one way: "attempt N of M", M the most allowed."""

import pytest


@pytest.mark.django_db
def test_a_retrying_run_names_the_attempt_it_waits_to_start(make_agent, make_execution):
    agent = make_agent(max_retries=3)
    execution = make_execution(agent, "retrying", attempt=1)
    assert execution.status_label == "Retrying (attempt 2 of 4)"


@pytest.mark.django_db
def test_a_running_retry_names_its_attempt(make_agent, make_execution):
    agent = make_agent(max_retries=3)
    assert make_execution(agent, "running", attempt=2).status_label == "Running (attempt 2 of 4)"
    assert make_execution(agent, "running", attempt=1).status_label == "Running"


@pytest.mark.django_db
def test_a_run_that_failed_for_good_says_how_many_attempts_it_made(make_agent, make_execution):
    agent = make_agent(max_retries=2)
    execution = make_execution(agent, "failed", attempt=3, error_category="upstream_error")
    assert execution.status_label == "Failed after 3 attempts"
