"""Artifacts in the admin: listed for staff, read-only, each with its download link."""

import pytest
from django.urls import reverse

from artifacts.services import artifact_save

pytestmark = pytest.mark.django_db


def test_staff_see_the_files_with_a_download_link(staff_client, running):
    artifact = artifact_save(execution=running, attempt=1, name="report.csv", data="a\n")

    listing = staff_client.get(reverse("admin:artifacts_artifact_changelist"))
    page = staff_client.get(reverse("admin:artifacts_artifact_change", args=[artifact.pk]))

    assert listing.status_code == 200 and b"report.csv" in listing.content
    assert page.status_code == 200
    download = reverse("artifacts:download", args=[running.uuid, artifact.uuid])
    assert f'href="{download}"'.encode() in page.content
    assert b'name="_save"' not in page.content  # read-only


def test_nobody_adds_or_deletes_them_by_hand(staff_client, running):
    artifact = artifact_save(execution=running, attempt=1, name="report.csv", data="a\n")

    assert staff_client.get(reverse("admin:artifacts_artifact_add")).status_code == 403
    delete = reverse("admin:artifacts_artifact_delete", args=[artifact.pk])
    assert staff_client.post(delete, {"post": "yes"}).status_code == 403
    assert running.artifacts.count() == 1
