"""artifacts.services: saving (what is stored, where, the limits and their messages) and
deleting (rows now, files once that commits), on a real file-system storage."""

import io
import json
import os
import re
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from agents.services import agent_delete
from artifacts.models import Artifact
from artifacts.services import (
    ArtifactRefused,
    artifact_save,
    artifacts_delete,
    download_filename,
    guess_content_type,
)
from executions.services import execution_request
from tests.artifacts.conftest import stored_files

pytestmark = pytest.mark.django_db


def save(execution, name="report.csv", data=b"a,b\n1,2\n", **kwargs):
    return artifact_save(
        execution=execution, attempt=execution.attempt, name=name, data=data, **kwargs
    )


# --- What is stored ---------------------------------------------------------------------------


def test_bytes_are_stored_under_the_ids_never_the_name(running, storage_dir):
    artifact = save(running, name="../../etc/passwd", data=b"\x00\x01binary")

    assert artifact.file.name == f"{running.uuid}/{artifact.uuid}"
    assert stored_files(storage_dir) == [storage_dir / str(running.uuid) / str(artifact.uuid)]
    assert (storage_dir / artifact.file.name).read_bytes() == b"\x00\x01binary"
    assert (artifact.name, artifact.size, artifact.attempt) == ("../../etc/passwd", 8, 1)
    assert artifact.content_type == "application/octet-stream"


def test_text_is_stored_as_utf8_with_a_charset(running, storage_dir):
    artifact = save(running, name="résumé.txt", data="Relevé: 12 €\n")

    assert (storage_dir / artifact.file.name).read_bytes() == "Relevé: 12 €\n".encode()
    assert artifact.content_type == "text/plain; charset=utf-8"
    assert artifact.size == len("Relevé: 12 €\n".encode())


def test_a_binary_file_object_is_read_whole(running, storage_dir):
    data = bytes(range(256)) * 5000  # 1.28 MB: more than one read
    artifact = save(running, name="blob.bin", data=io.BytesIO(data))

    assert (storage_dir / artifact.file.name).read_bytes() == data
    assert artifact.size == len(data)


def test_a_text_file_object_is_kept_as_utf8(running, storage_dir):
    artifact = save(running, name="notes.md", data=io.StringIO("# Ünïcode\n"))

    assert (storage_dir / artifact.file.name).read_bytes() == "# Ünïcode\n".encode()
    assert artifact.content_type == "text/markdown; charset=utf-8"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("report.csv", True, "text/csv; charset=utf-8"),
        ("report.csv", False, "text/csv"),
        ("summary.json", False, "application/json"),
        ("photo.PNG", False, "image/png"),
        ("dump.csv.gz", False, "application/gzip"),
        ("response", False, "application/octet-stream"),
        ("response", True, "text/plain; charset=utf-8"),
    ],
)
def test_the_content_type_is_guessed_from_the_name(name, text, expected):
    assert guess_content_type(name, text=text) == expected


def test_a_given_content_type_is_kept(running):
    artifact = save(running, name="data", data=b"{}", content_type="application/vnd.api+json")

    assert artifact.content_type == "application/vnd.api+json"


@pytest.mark.parametrize("bad", ["json", "text/html\r\nSet-Cookie: x=1", "a/b;", ""])
def test_a_content_type_that_is_not_one_is_refused(running, storage_dir, bad):
    with pytest.raises(ValueError, match="is not a content type"):
        save(running, content_type=bad)

    assert stored_files(storage_dir) == []


def test_the_agents_secret_values_are_masked_in_the_file(running, storage_dir):
    artifact = save(running, data=b"token=s3cr3t-value;again s3cr3t-value", mask=["s3cr3t-value"])

    assert (storage_dir / artifact.file.name).read_bytes() == b"token=***;again ***"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "Give the file a name"),
        ("   ", "Give the file a name"),
        ("a" * 201, "at most 200"),
        ("two\nlines.txt", "control character or a line break"),
        (42, "must be text"),
    ],
)
def test_a_bad_name_is_refused_with_a_message(running, name, message):
    with pytest.raises(ValueError, match=message):
        save(running, name=name)


def test_data_that_is_not_bytes_text_or_a_file_is_a_type_error(running):
    with pytest.raises(TypeError, match="bytes, text \\(str\\) or a file opened for reading"):
        save(running, data={"a": 1})


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.csv", "report.csv"),
        ("reports/2026/q1.csv", "q1.csv"),
        ("..\\..\\boot.ini", "boot.ini"),
        ('say "hi"\t.txt', "say _hi__.txt"),
        ("Relevé €.pdf", "Relevé €.pdf"),
        ("...", "file"),
        ("../", "file"),
    ],
)
def test_the_download_name_is_a_plain_file_name(name, expected):
    assert download_filename(name) == expected


# --- Saving a name again ------------------------------------------------------------------------


def test_saving_a_name_again_replaces_the_file(
    running, storage_dir, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = save(running, data=b"first")
        second = save(running, data=b"second, longer")

    assert list(running.artifacts.values_list("uuid", flat=True)) == [second.uuid]
    assert stored_files(storage_dir) == [storage_dir / second.file.name]
    assert not (storage_dir / first.file.name).exists()


def test_a_replaced_file_does_not_count_against_the_limits(running, settings):
    settings.CONVEYOR_ARTIFACTS_MAX_COUNT = 1
    settings.CONVEYOR_ARTIFACTS_MAX_BYTES = 10

    save(running, data=b"x" * 10)
    save(running, data=b"y" * 10)

    assert running.artifacts.get().size == 10


# --- Limits -------------------------------------------------------------------------------------


def test_a_file_over_the_per_file_limit_is_refused_and_nothing_is_stored(
    running, storage_dir, settings
):
    settings.CONVEYOR_ARTIFACT_MAX_BYTES = 1024

    with pytest.raises(ValueError) as refused:
        save(running, name="big.bin", data=b"x" * 2048)

    assert str(refused.value) == (
        "The file “big.bin” is 2.0 KB, larger than the 1.0 KB one file may be on this "
        "installation. Save a smaller file, or split it."
    )
    assert not Artifact.objects.exists() and stored_files(storage_dir) == []


def test_a_file_object_over_the_limit_is_read_no_further_than_the_limit(running, settings):
    settings.CONVEYOR_ARTIFACT_MAX_BYTES = 1024
    source = io.BytesIO(b"x" * 1_000_000)

    with pytest.raises(ValueError) as refused:
        save(running, name="big.bin", data=source)

    assert str(refused.value).startswith("The file “big.bin” is larger than the 1.0 KB one")

    assert source.tell() == 1025


def test_a_file_at_the_limit_is_saved(running, settings):
    settings.CONVEYOR_ARTIFACT_MAX_BYTES = 1024

    assert save(running, data=b"x" * 1024).size == 1024


def test_files_over_the_per_execution_total_are_refused(running, settings):
    settings.CONVEYOR_ARTIFACTS_MAX_BYTES = 3000
    save(running, name="a.bin", data=b"x" * 2000)

    with pytest.raises(ValueError) as refused:
        save(running, name="b.bin", data=b"x" * 1001)

    assert str(refused.value) == (
        "“b.bin” (1001 bytes) was not saved: with it this run's files would take 2.9 KB, more "
        "than the 2.9 KB one run may keep on this installation. Save fewer or smaller files."
    )
    assert save(running, name="c.bin", data=b"x" * 1000).size == 1000


def test_more_files_than_the_count_limit_are_refused(running, settings):
    settings.CONVEYOR_ARTIFACTS_MAX_COUNT = 2
    save(running, name="1.txt", data="1")
    save(running, name="2.txt", data="2")

    with pytest.raises(ValueError) as refused:
        save(running, name="3.txt", data="3")

    assert str(refused.value).startswith("“3.txt” was not saved: this run already keeps 2 files")


def test_the_limits_are_per_execution(make_agent, make_execution, storage_dir, settings):
    settings.CONVEYOR_ARTIFACTS_MAX_COUNT = 1
    agent = make_agent()
    one, two = make_execution(agent, "running"), make_execution(agent, "running")

    save(one, name="out.txt", data="1")
    save(two, name="other.txt", data="2")

    assert Artifact.objects.count() == 2


def test_a_refusal_is_a_permanent_agent_error_whose_message_is_the_reason():
    from agents.kinds.base import PermanentError
    from executions.errors import classify

    error = classify(ArtifactRefused("“x” was not saved: too many files."))

    assert issubclass(ArtifactRefused, ValueError) and issubclass(ArtifactRefused, PermanentError)
    assert (error.category, error.retryable) == ("internal", False)
    assert error.reason == "“x” was not saved: too many files."


# --- Deleting -----------------------------------------------------------------------------------


def test_artifacts_delete_removes_the_rows_and_then_the_files(
    make_agent, make_execution, storage_dir, django_capture_on_commit_callbacks
):
    agent = make_agent()
    gone, kept = make_execution(agent, "running"), make_execution(agent, "running")
    save(gone, name="a.csv")
    save(gone, name="b.csv")
    stays = save(kept, name="a.csv")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert artifacts_delete(execution_ids=[gone.pk]) == 2
    # Rows gone at once; files only once the deletion commits.
    assert list(Artifact.objects.all()) == [stays]
    assert len(stored_files(storage_dir)) == 3

    for callback in callbacks:
        callback()
    assert stored_files(storage_dir) == [storage_dir / stays.file.name]


def test_artifacts_delete_of_nothing_deletes_nothing(running):
    save(running)

    assert artifacts_delete(execution_ids=[]) == 0
    assert artifacts_delete(execution_ids=[running.pk + 1000]) == 0
    assert running.artifacts.count() == 1


def test_a_deletion_that_rolls_back_keeps_the_files(running, storage_dir):
    from django.db import transaction

    save(running)
    with pytest.raises(RuntimeError), transaction.atomic():
        artifacts_delete(execution_ids=[running.pk])
        raise RuntimeError("rolled back")

    assert running.artifacts.count() == 1
    assert len(stored_files(storage_dir)) == 1


def test_deleting_an_execution_by_cascade_removes_its_files(
    running, storage_dir, django_capture_on_commit_callbacks
):
    save(running, name="a.csv")
    save(running, name="b.csv")

    with django_capture_on_commit_callbacks(execute=True):
        running.delete()

    assert not Artifact.objects.exists()
    assert stored_files(storage_dir) == []


def test_deleting_the_agent_removes_its_runs_files(
    make_agent, make_execution, storage_dir, django_capture_on_commit_callbacks
):
    agent = make_agent()
    save(make_execution(agent, "succeeded"))
    save(make_execution(agent, "failed"), name="other.csv")
    queued = execution_request(agent=make_agent(), trigger="manual", hold=True)
    others = save(queued, name="not-this-agents.csv")

    with django_capture_on_commit_callbacks(execute=True):
        agent_delete(agent=agent)

    assert list(Artifact.objects.all()) == [others]
    assert stored_files(storage_dir) == [storage_dir / others.file.name]


def test_a_file_already_gone_from_the_storage_does_not_stop_a_deletion(
    running, storage_dir, django_capture_on_commit_callbacks
):
    artifact = save(running)
    (storage_dir / artifact.file.name).unlink()

    with django_capture_on_commit_callbacks(execute=True):
        assert artifacts_delete(execution_ids=[running.pk]) == 1

    assert not Artifact.objects.exists()


# --- Settings -----------------------------------------------------------------------------------


def test_an_unknown_storage_class_is_reported_by_the_system_check(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {"BACKEND": "storages.backends.nowhere.Storage", "OPTIONS": {}},
    }

    with pytest.raises(SystemCheckError, match=re.escape("artifacts.E001")):
        call_command("check")


def settings_in_a_new_process(tmp_path, **env) -> subprocess.CompletedProcess:
    """The artifacts settings as a process started with ``env`` reads them."""
    code = (
        "import json, config.settings as s; print(json.dumps([s.STORAGES['artifacts'], "
        "s.CONVEYOR_ARTIFACT_MAX_BYTES, s.CONVEYOR_ARTIFACTS_MAX_BYTES, "
        "s.CONVEYOR_ARTIFACTS_MAX_COUNT]))"
    )
    clean = {"PATH": os.environ.get("PATH", ""), "CONVEYOR_VAR_DIR": str(tmp_path), "DEBUG": "1"}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=django_settings.BASE_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_by_default_files_go_to_the_var_directory_within_the_documented_limits(tmp_path):
    done = settings_in_a_new_process(tmp_path)

    assert done.returncode == 0, done.stderr
    storage, per_file, per_run, count = json.loads(done.stdout.splitlines()[-1])
    assert storage["BACKEND"] == "django.core.files.storage.FileSystemStorage"
    assert storage["OPTIONS"]["location"] == str(tmp_path / "artifacts")
    assert (per_file, per_run, count) == (10 * 1024 * 1024, 50 * 1024 * 1024, 100)


def test_another_storage_is_named_with_its_options(tmp_path):
    done = settings_in_a_new_process(
        tmp_path,
        CONVEYOR_ARTIFACTS_STORAGE="storages.backends.s3.S3Storage",
        CONVEYOR_ARTIFACTS_STORAGE_OPTIONS='{"bucket_name": "runs", "endpoint_url": "https://s3.example.com"}',
    )

    assert done.returncode == 0, done.stderr
    storage = json.loads(done.stdout.splitlines()[-1])[0]
    assert storage == {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": "runs", "endpoint_url": "https://s3.example.com"},
    }


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CONVEYOR_ARTIFACTS_STORAGE_OPTIONS", "{bucket", "must be a JSON object"),
        ("CONVEYOR_ARTIFACTS_STORAGE", "S3Storage", "dotted path"),
    ],
)
def test_bad_storage_settings_stop_the_start(tmp_path, variable, value, message):
    done = settings_in_a_new_process(tmp_path, **{variable: value})

    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and variable in done.stderr
    assert message in done.stderr
