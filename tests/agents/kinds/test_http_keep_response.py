"""The http kind's ``keep_response``: the whole body of an expected answer kept as the run's file
"response". The runner runs in the test process against the real local server, with the real
ExecutionContext, database and file storage."""

import pytest

from agents.kinds.base import ConfigInvalid
from agents.kinds.http import kind as http_kind
from executions import runner
from executions.services import execution_request
from tests.agents.conftest import local_url

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("allow_local")]


@pytest.fixture
def storage_dir(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    return tmp_path


def run(agent):
    execution = execution_request(agent=agent, trigger="manual", hold=True)
    runner.run_attempt(execution_id=execution.pk, expected_attempt=0)
    execution.refresh_from_db()
    return execution


def http_agent(make_agent, httpserver, path="/export", **config):
    config = {"url": local_url(httpserver, path), "method": "GET", "body": "none", **config}
    return make_agent(kind="http", config=config, max_retries=0)


def test_the_whole_body_is_kept_with_the_answers_content_type(
    make_agent, httpserver, storage_dir, settings
):
    settings.CONVEYOR_HTTP_RESULT_BODY_CHARS = 10
    body = "id,name\n" + "".join(f"{i},item {i}\n" for i in range(500))
    httpserver.expect_request("/export").respond_with_data(body, content_type="text/csv")

    execution = run(http_agent(make_agent, httpserver, keep_response=True))

    assert execution.status == "succeeded", execution.error_message
    kept = execution.artifacts.get()
    assert (kept.name, kept.content_type, kept.size) == ("response", "text/csv", len(body))
    assert (storage_dir / kept.file.name).read_text() == body
    # The result is as it always is: a shortened copy.
    assert execution.result["body"] == body[:10] and execution.result["truncated"] is True


def test_a_body_longer_than_the_result_limit_is_kept_whole_up_to_the_file_limit(
    make_agent, httpserver, storage_dir, settings
):
    settings.CONVEYOR_HTTP_MAX_RESPONSE_BYTES = 100
    settings.CONVEYOR_ARTIFACT_MAX_BYTES = 5000
    httpserver.expect_request("/export").respond_with_data(b"\x89PNG" + b"x" * 3000)

    execution = run(http_agent(make_agent, httpserver, keep_response=True))

    assert execution.status == "succeeded", execution.error_message
    kept = execution.artifacts.get()
    assert kept.size == 3004
    assert (storage_dir / kept.file.name).read_bytes() == b"\x89PNG" + b"x" * 3000


def test_a_body_longer_than_a_file_may_be_fails_the_run_for_good(
    make_agent, httpserver, storage_dir, settings
):
    settings.CONVEYOR_HTTP_MAX_RESPONSE_BYTES = 100
    settings.CONVEYOR_ARTIFACT_MAX_BYTES = 1000
    httpserver.expect_request("/export").respond_with_data(b"x" * 5000)

    execution = run(http_agent(make_agent, httpserver, keep_response=True))

    assert (execution.status, execution.error_category) == ("failed", "configuration")
    assert execution.error_message.startswith(
        "The answer is longer than the 1,000 bytes Conveyor keeps as a file, so it could not "
        "be kept whole."
    )
    assert not execution.artifacts.exists()


def test_an_answer_that_is_not_expected_keeps_nothing(make_agent, httpserver, storage_dir):
    httpserver.expect_request("/export").respond_with_data("gone", status=404)

    execution = run(http_agent(make_agent, httpserver, keep_response=True))

    assert execution.status == "failed"
    assert not execution.artifacts.exists()


def test_without_the_option_nothing_is_kept(make_agent, httpserver, storage_dir):
    httpserver.expect_request("/export").respond_with_data("data")

    execution = run(http_agent(make_agent, httpserver))

    assert execution.status == "succeeded"
    assert not execution.artifacts.exists()


def test_a_content_type_that_is_not_one_is_kept_as_plain_bytes(make_agent, httpserver, storage_dir):
    httpserver.expect_request("/export").respond_with_data("data", headers={"Content-Type": "csv"})

    execution = run(http_agent(make_agent, httpserver, keep_response=True))

    assert execution.artifacts.get().content_type == "application/octet-stream"


def test_an_echoed_secret_is_masked_in_the_file(make_agent, httpserver, storage_dir):
    httpserver.expect_request("/export").respond_with_data(
        '{"echo": "Bearer sk-live-123456"}', content_type="application/json"
    )
    agent = make_agent(
        kind="http",
        config={
            "url": local_url(httpserver, "/export"),
            "method": "GET",
            "body": "none",
            "secret_headers": {"Authorization": "token"},
            "keep_response": True,
        },
        secrets={"token": "Bearer sk-live-123456"},
    )

    execution = run(agent)

    kept = execution.artifacts.get()
    assert (storage_dir / kept.file.name).read_bytes() == b'{"echo": "***"}'
    assert kept.content_type == "application/json"


# --- The option in the config -------------------------------------------------------------------


def test_the_option_is_off_by_default_and_described_when_on():
    off = http_kind.clean_config({"url": "https://example.com/export"})
    on = http_kind.clean_config({"url": "https://example.com/export", "keep_response": True})

    assert off["keep_response"] is False and on["keep_response"] is True
    assert ("Response body", "Kept as the file “response”") in http_kind.summary(on)
    assert "Response body" not in dict(http_kind.summary(off))


def test_the_option_takes_a_boolean_only():
    with pytest.raises(ConfigInvalid) as refused:
        http_kind.clean_config({"url": "https://example.com/export", "keep_response": "yes"})

    assert refused.value.errors == {"keep_response": ["Enter true or false."]}
