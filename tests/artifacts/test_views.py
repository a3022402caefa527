"""The Files section of the execution page and the download behind it: the execution's owner
and staff download, anyone else gets the 404 of an unknown address, anonymous visitors sign in
first."""

import pytest
from django.urls import reverse

from artifacts.services import artifact_save

pytestmark = pytest.mark.django_db


@pytest.fixture
def report(running):
    return artifact_save(
        execution=running, attempt=1, name="Q1 report.csv", data="day,orders\n1,12\n"
    )


def download_url(artifact):
    return reverse("artifacts:download", args=[artifact.execution.uuid, artifact.uuid])


def test_the_owner_downloads_the_file_as_an_attachment(alice_client, report):
    response = alice_client.get(download_url(report))

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"day,orders\n1,12\n"
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="Q1 report.csv"'
    assert response["Content-Length"] == "16"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]


def test_html_is_never_served_inline(alice_client, running):
    page = artifact_save(
        execution=running, attempt=1, name="<x>.html", data="<script>alert(1)</script>"
    )

    response = alice_client.get(download_url(page))

    assert response["Content-Disposition"] == 'attachment; filename="_x_.html"'
    assert response["X-Content-Type-Options"] == "nosniff"


def test_a_name_with_accents_is_encoded_in_the_header(alice_client, running):
    artifact = artifact_save(execution=running, attempt=1, name="relevé.txt", data="x")

    response = alice_client.get(download_url(artifact))

    assert response["Content-Disposition"] == "attachment; filename*=utf-8''relev%C3%A9.txt"


def test_another_user_gets_404(client, bob, report):
    client.force_login(bob)

    assert client.get(download_url(report)).status_code == 404


def test_staff_download_any_file(staff_client, report):
    response = staff_client.get(download_url(report))

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"day,orders\n1,12\n"


def test_anonymous_visitors_are_sent_to_sign_in(client, report):
    response = client.get(download_url(report))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_a_file_under_another_execution_is_not_found(
    alice_client, make_agent, make_execution, report
):
    other = make_execution(make_agent(name="other"), "succeeded")
    url = reverse("artifacts:download", args=[other.uuid, report.uuid])

    assert alice_client.get(url).status_code == 404


def test_a_file_gone_from_the_storage_is_not_found(alice_client, report, storage_dir):
    (storage_dir / report.file.name).unlink()

    response = alice_client.get(download_url(report))

    assert response.status_code == 404


def test_the_execution_page_lists_the_files(alice_client, report, running):
    artifact_save(execution=running, attempt=1, name="summary.json", data=b'{"a": 1}')

    page = alice_client.get(reverse("executions:detail", args=[running.uuid])).content.decode()

    assert '<section class="card" id="files">' in page
    assert page.index("Q1 report.csv") < page.index("summary.json")
    assert f'href="{download_url(report)}"' in page
    assert "16 bytes" in page and "text/csv; charset=utf-8" in page
    assert "application/json" in page


def test_the_live_part_lists_them_too(alice_client, report, running):
    fragment = alice_client.get(reverse("executions:live", args=[running.uuid])).content.decode()

    assert "Q1 report.csv" in fragment


def test_without_files_there_is_no_files_section(alice_client, running):
    page = alice_client.get(reverse("executions:detail", args=[running.uuid])).content.decode()

    assert 'id="files"' not in page


def test_files_of_an_attempt_that_was_retried_say_they_stay(
    alice_client, make_agent, make_execution, storage_dir
):
    run = make_execution(make_agent(max_retries=2), "succeeded", attempt=2)
    artifact_save(execution=run, attempt=1, name="partial.csv", data="a\n")
    artifact_save(execution=run, attempt=2, name="final.csv", data="b\n")

    page = alice_client.get(reverse("executions:detail", args=[run.uuid])).content.decode()

    assert "· attempt 1" in page and "· attempt 2" in page
    assert "Files saved by an attempt that was then retried stay with the run" in page


def test_a_first_attempts_files_need_no_note(alice_client, report, running):
    page = alice_client.get(reverse("executions:detail", args=[running.uuid])).content.decode()

    assert "· attempt 1" not in page and "then retried" not in page
