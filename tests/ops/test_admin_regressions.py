"""The admin's history of agents worse than their usual: read-only, each row in words."""

from __future__ import annotations

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from ops.models import Regression


def regression(agent, **fields):
    now = timezone.now()
    values = dict(
        agent=agent,
        what=Regression.What.P95,
        started_at=now - timedelta(hours=2),
        last_value=3.2,
        usual_value=1.1,
        last_runs=50,
        usual_runs=280,
        threshold=50,
    )
    return Regression.objects.create(**{**values, **fields})


def test_the_list_and_a_row_say_what_regressed_and_how_it_ended(staff_client, make_agent, alice):
    agent = make_agent(alice, name="invoice-sync")
    closed = regression(
        agent,
        what=Regression.What.SUCCESS,
        last_value=0.62,
        usual_value=0.98,
        threshold=10,
        ended_at=timezone.now() - timedelta(hours=1),
        end_reason=Regression.EndReason.RECOVERED,
    )
    open_ = regression(agent)

    page = staff_client.get(reverse("admin:ops_regression_changelist"))
    assert page.status_code == 200
    text = page.content.decode()
    assert "invoice-sync" in text
    assert "success rate 62% (50 runs) against 98% (280 runs)" in text
    assert "Back to its usual" in text
    assert "Add regression" not in text

    only_open = staff_client.get(
        reverse("admin:ops_regression_changelist"), {"ended_at__isnull": "True"}
    )
    listed = only_open.content.decode()
    assert f"regression/{open_.pk}/change/" in listed
    assert f"regression/{closed.pk}/change/" not in listed
    assert "p95 3.2 s (50 runs) against 1.1 s (280 runs)" in listed

    row = staff_client.get(reverse("admin:ops_regression_change", args=[open_.pk]))
    assert row.status_code == 200
    assert "50% slower" in row.content.decode()


def test_nobody_adds_changes_or_deletes_one_by_hand(staff_client, make_agent, alice):
    row = regression(make_agent(alice))
    assert staff_client.get(reverse("admin:ops_regression_add")).status_code == 403
    assert (
        staff_client.post(reverse("admin:ops_regression_delete", args=[row.pk])).status_code == 403
    )
    assert Regression.objects.filter(pk=row.pk).exists()


def test_a_person_who_is_not_staff_is_sent_to_the_login(client, alice):
    client.force_login(alice)
    answer = client.get(reverse("admin:ops_regression_changelist"))
    assert answer.status_code == 302 and "/login/" in answer["Location"]
