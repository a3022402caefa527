"""The bulk actions' admin: operators read who did what, with which filter and how it went;
nobody adds, changes or deletes one by hand."""

import pytest
from django.urls import reverse

from executions.bulk import bulk_action_create, bulk_action_run

pytestmark = pytest.mark.django_db


def test_operators_see_who_did_it_and_how_it_went(staff_client, alice, make_agent, make_execution):
    agent = make_agent(alice)
    make_execution(agent, "failed")
    action = bulk_action_create(
        owner=alice, action="retry", filter={"status": ["failed"]}, via="page"
    )
    bulk_action_run(bulk_id=action.pk, max_seconds=60)
    listing = staff_client.get(reverse("admin:executions_bulkaction_changelist"))
    assert listing.status_code == 200
    page = listing.content.decode()
    assert str(action.uuid)[:8] in page and "alice" in page and "1 of 1" in page
    detail = staff_client.get(reverse("admin:executions_bulkaction_change", args=[action.pk]))
    assert detail.status_code == 200
    assert "&quot;status&quot;" in detail.content.decode()
    assert staff_client.get(reverse("admin:executions_bulkaction_add")).status_code == 403
    deleted = staff_client.post(
        reverse("admin:executions_bulkaction_delete", args=[action.pk]), {"post": "yes"}
    )
    assert deleted.status_code == 403
