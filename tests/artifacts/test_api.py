"""The API's side of artifacts: an execution's detail lists its files with their download
addresses; the download answers the owner and staff, and anyone else as for an unknown id."""

import uuid

import pytest
from django.test import Client
from django.urls import reverse

from api.services import token_create
from artifacts.services import artifact_save
from tests.conftest import error_of

pytestmark = pytest.mark.django_db


def api_client(user=None) -> Client:
    if user is None:
        return Client()
    _, token = token_create(owner=user, name="artifacts test")
    return Client(headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def files(running):
    report = artifact_save(execution=running, attempt=1, name="report.csv", data="a,b\n1,2\n")
    summary = artifact_save(execution=running, attempt=1, name="summary.json", data=b'{"n": 2}')
    return report, summary


def download_url(artifact) -> str:
    return reverse("api:execution-artifact", args=[artifact.execution.uuid, artifact.uuid])


def test_the_execution_detail_lists_its_files(alice, running, files):
    report, _ = files

    body = api_client(alice).get(reverse("api:execution-detail", args=[running.uuid])).json()

    assert [f["name"] for f in body["artifacts"]] == ["report.csv", "summary.json"]
    first = body["artifacts"][0]
    assert first == {
        "id": str(report.uuid),
        "name": "report.csv",
        "size": 8,
        "content_type": "text/csv; charset=utf-8",
        "attempt": 1,
        "created_at": first["created_at"],
        "download_url": f"http://testserver{download_url(report)}",
    }
    assert body["artifacts"][1]["content_type"] == "application/json"


def test_an_execution_without_files_lists_none(alice, running):
    body = api_client(alice).get(reverse("api:execution-detail", args=[running.uuid])).json()

    assert body["artifacts"] == []


def test_the_owner_downloads_a_file_with_a_token(alice, files):
    report, _ = files

    response = api_client(alice).get(download_url(report))

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"a,b\n1,2\n"
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="report.csv"'
    assert response["X-Content-Type-Options"] == "nosniff"


def test_whatever_the_accept_header_asks_the_file_comes(alice, files):
    _, summary = files

    response = api_client(alice).get(download_url(summary), HTTP_ACCEPT="application/xml")

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b'{"n": 2}'


def test_another_user_gets_the_404_of_an_unknown_id(bob, files):
    report, _ = files

    response = api_client(bob).get(download_url(report))

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
    assert b"report" not in response.content


def test_staff_download_any_file(staff, files):
    report, _ = files

    response = api_client(staff).get(download_url(report))

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"a,b\n1,2\n"


def test_without_a_token_the_download_is_refused(files):
    response = api_client().get(download_url(files[0]))

    assert response.status_code == 401
    assert error_of(response)["code"] == "not_authenticated"


@pytest.mark.parametrize("which", ["execution", "artifact"])
def test_an_unknown_or_malformed_id_is_a_404(alice, files, which):
    report, _ = files
    client = api_client(alice)
    for wrong in (uuid.uuid4(), "not-a-uuid"):
        ids = {"execution": report.execution.uuid, "artifact": report.uuid, which: wrong}
        url = reverse("api:execution-artifact", args=[ids["execution"], ids["artifact"]])
        response = client.get(url)
        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"


def test_a_file_gone_from_the_storage_is_a_404_that_says_so(alice, files, storage_dir):
    report, _ = files
    (storage_dir / report.file.name).unlink()

    response = api_client(alice).get(download_url(report))

    assert response.status_code == 404
    assert error_of(response)["message"] == "This file is no longer stored."
