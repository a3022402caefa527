"""Retention (executions.retention): finished executions past their age go, with everything that
belongs to them, in batches; active ones, young ones and flows with a step kept stay.

Rows are made old through the services a real run goes through, at the times the test gives
(``make_execution(..., at=...)``, ``flow_started``/``step_ended`` with ``at=``). Runs here on
SQLite and on Postgres (DATABASE_URL)."""

from collections import Counter
from datetime import timedelta

import pytest
from django.apps import apps
from django.conf import settings as django_settings
from django.db import models
from django.utils import timezone
from django_celery_results.models import GroupResult, TaskResult

from executions.models import (
    Execution,
    ExecutionAttempt,
    ExecutionEvent,
    ExecutionLog,
    FlowStep,
)
from executions.retention import (
    KINDS,
    _belonging,
    _letting_go,
    current_policy,
    retention_run,
    rules,
)
from executions.services import execution_retry
from executions.tasks import apply_retention
from notifications.models import CompletionHook, Delivery, DeliveryAttempt
from notifications.services import channel_create, delivery_send
from ops.models import Rollup
from tests.conftest import flow_started, step_ended

pytestmark = pytest.mark.django_db


@pytest.fixture
def now():
    return timezone.now().replace(microsecond=0)


def days_before(now, days: float):
    return now - timedelta(days=days)


def exists(execution) -> bool:
    return Execution.objects.filter(pk=execution.pk).exists()


def rows_of(execution) -> dict[str, int]:
    """Every row that belongs to an execution, by kind."""
    return {
        "attempts": ExecutionAttempt.objects.filter(execution=execution.pk).count(),
        "events": ExecutionEvent.objects.filter(execution=execution.pk).count(),
        "logs": ExecutionLog.objects.filter(execution=execution.pk).count(),
        "flow steps": FlowStep.objects.filter(flow=execution.pk).count(),
        "deliveries": Delivery.objects.filter(execution=execution.pk).count(),
        "delivery attempts": DeliveryAttempt.objects.filter(
            delivery__execution=execution.pk
        ).count(),
        "completion hooks": CompletionHook.objects.filter(execution=execution.pk).count(),
    }


def table_sizes() -> dict[str, int]:
    tracked = [Execution, ExecutionAttempt, ExecutionEvent, ExecutionLog, FlowStep, Delivery]
    tracked += [DeliveryAttempt, CompletionHook, TaskResult, GroupResult]
    return {model._meta.label: model.objects.count() for model in tracked}


def write_log(execution, message: str):
    # The lines a run's ctx.log() writes (the runner buffers them and writes them with the
    # attempt's end; the factory's runs log nothing of their own).
    return ExecutionLog.objects.create(
        execution=execution, attempt=1, at=execution.finished_at, message=message
    )


@pytest.fixture
def told(make_agent, alice):
    """A function agent with a completion hook whose every run's end is told by email."""
    channel, _ = channel_create(owner=alice, kind="email", name="me", target="alice@example.com")
    return make_agent(
        name="told",
        config={"function": "test.counted"},
        notify_on="always",
        notify_channels=[channel],
    )


def finished_with_everything(make_execution, agent, status, *, at, attempt=2):
    """A run that made ``attempt`` attempts, wrote a log line, was told (its email sent: a
    delivery attempt) and had its completion hook recorded."""
    execution = make_execution(agent, status, at=at, attempt=attempt)
    write_log(execution, "hello")
    for delivery in Delivery.objects.filter(execution=execution):
        delivery_send(delivery_id=delivery.pk, at=at)
    return execution


# --- The rules --------------------------------------------------------------------------------


def test_succeeded_runs_go_after_30_days_failed_and_cancelled_ones_after_90(now):
    found = rules(now=now, succeeded_days=30, failed_days=90)

    assert [(r.statuses, r.days, r.cutoff, r.others) for r in found] == [
        (("succeeded",), 30, now - timedelta(days=30), True),
        (("failed", "cancelled"), 90, now - timedelta(days=90), True),
    ]


def test_each_number_of_days_agents_chose_is_a_rule_of_its_own(now):
    found = rules(
        now=now,
        succeeded_days=30,
        failed_days=90,
        # Agent 3 chose the site's own days: it stays under the site's rule.
        overrides=[(1, 7, None), (2, 7, 365), (3, 30, None), (4, None, 14)],
    )

    assert [(r.statuses[0], r.days, sorted(r.agents), r.others) for r in found] == [
        ("succeeded", 30, [1, 2], True),
        ("succeeded", 7, [1, 2], False),
        ("failed", 90, [2, 4], True),
        ("failed", 14, [4], False),
        ("failed", 365, [2], False),
    ]


def test_every_row_that_points_at_an_execution_goes_with_it_or_lets_go_of_it():
    # A new model with a foreign key to executions must be deleted with them (_belonging, whose
    # kinds the reports name) or let go of them (_letting_go), or a batch fails at its commit.
    goes = set(_belonging([]))
    lets_go = {(rows.model._meta.label, name) for rows, name in _letting_go([])}
    for relation in Execution._meta.related_objects:
        model, name = relation.related_model._meta.label, relation.field.name
        if model == "executions.Execution" and name == "parent":
            continue  # flow steps: they go with their flow (rule 3)
        if relation.on_delete is models.CASCADE:
            assert model in goes, f"{model}.{name}"
            for inner in relation.related_model._meta.related_objects:
                inner_model = inner.related_model._meta.label
                assert inner_model in goes, f"{model}.{name} <- {inner_model}"
        else:
            assert relation.on_delete is models.SET_NULL, f"{model}.{name}"
            assert (model, name) in lets_go, f"{model}.{name}"
    assert goes <= set(KINDS)


# --- What goes, what stays --------------------------------------------------------------------


def test_an_old_succeeded_run_goes_with_everything_that_belongs_to_it(make_execution, told, now):
    old = finished_with_everything(make_execution, told, "succeeded", at=days_before(now, 40))
    young = finished_with_everything(make_execution, told, "succeeded", at=days_before(now, 20))
    had = rows_of(old)
    # It has rows of every kind to lose (a flow's steps: below).
    assert all(n for kind, n in had.items() if kind != "flow steps"), had

    report = retention_run(now=now)

    assert not exists(old)
    assert not any(rows_of(old).values())
    assert exists(young) and rows_of(young) == had
    assert report.counts() == {"executions": 1, **{k: n for k, n in had.items() if n}}
    assert report.agents == Counter({told.pk: 1})
    assert report.complete


def test_failed_and_cancelled_runs_are_kept_90_days(make_agent, make_execution, now):
    agent = make_agent()
    failed_old = make_execution(agent, "failed", at=days_before(now, 100))
    cancelled_old = make_execution(agent, "cancelled", at=days_before(now, 100), attempt=1)
    failed_young = make_execution(agent, "failed", at=days_before(now, 40))
    cancelled_young = make_execution(agent, "cancelled", at=days_before(now, 40))
    succeeded_old = make_execution(agent, "succeeded", at=days_before(now, 40))

    retention_run(now=now)

    assert not exists(failed_old) and not exists(cancelled_old) and not exists(succeeded_old)
    assert exists(failed_young) and exists(cancelled_young)


def test_runs_still_under_way_stay_however_old(make_agent, make_execution, now):
    agent = make_agent()
    long_ago = days_before(now, 400)
    queued = make_execution(agent, "queued", at=long_ago, hold=True)
    running = make_execution(agent, "running", at=long_ago)
    retrying = make_execution(agent, "retrying", at=long_ago)

    report = retention_run(now=now)

    assert exists(queued) and exists(running) and exists(retrying)
    assert report.executions == 0


def test_an_agents_own_days_replace_the_sites(make_agent, make_execution, now):
    brief = make_agent(retain_succeeded_days=7, retain_failed_days=14)
    archive = make_agent(retain_succeeded_days=365)
    usual = make_agent()
    brief_succeeded = make_execution(brief, "succeeded", at=days_before(now, 10))
    brief_failed = make_execution(brief, "failed", at=days_before(now, 20))
    brief_failed_young = make_execution(brief, "failed", at=days_before(now, 10))
    archived = make_execution(archive, "succeeded", at=days_before(now, 100))
    archive_failed = make_execution(archive, "failed", at=days_before(now, 100))
    usual_succeeded = make_execution(usual, "succeeded", at=days_before(now, 40))
    usual_young = make_execution(usual, "succeeded", at=days_before(now, 10))

    report = retention_run(now=now)

    gone = [brief_succeeded, brief_failed, archive_failed, usual_succeeded]
    assert [exists(e) for e in gone] == [False] * 4
    assert exists(brief_failed_young) and exists(archived) and exists(usual_young)
    assert report.agents == Counter({brief.pk: 2, archive.pk: 1, usual.pk: 1})


def test_a_retry_outlives_the_run_it_retried(make_agent, make_execution, now):
    agent = make_agent()
    failed = make_execution(agent, "failed", at=days_before(now, 100))
    retry = execution_retry(execution=failed, at=days_before(now, 1))
    retry.refresh_from_db()
    assert retry.retry_of_id == failed.pk

    retention_run(now=now)

    retry.refresh_from_db()
    assert not exists(failed)
    assert retry.retry_of_id is None


# --- Flows ------------------------------------------------------------------------------------


@pytest.fixture
def echo(make_agent):
    return make_agent(name="echo")


@pytest.fixture
def two_steps(make_agent, echo):
    return make_agent(
        name="two-steps",
        kind="flow",
        config={"steps": [{"key": "a", "agent": "echo"}, {"key": "b", "agent": "echo"}]},
    )


def finished_flow(flow_agent, *, at):
    flow = flow_started(flow_agent, {"n": 1}, at=at)
    steps = [
        step_ended(flow, key, result={"key": key}, at=at + timedelta(seconds=1)) for key in "ab"
    ]
    flow.refresh_from_db()
    assert flow.status == Execution.Status.SUCCEEDED
    return flow, steps


def test_a_flow_goes_with_its_steps(two_steps, echo, now):
    flow, steps = finished_flow(two_steps, at=days_before(now, 40))
    young, young_steps = finished_flow(two_steps, at=days_before(now, 10))

    report = retention_run(now=now)

    assert not exists(flow) and not any(exists(s) for s in steps)
    assert not FlowStep.objects.filter(flow=flow.pk).exists()
    assert exists(young) and all(exists(s) for s in young_steps)
    assert report.rows["executions"] == 3 and report.rows["flow steps"] == 2
    assert report.agents == Counter({two_steps.pk: 1, echo.pk: 2})


def test_a_flow_stays_while_one_of_its_steps_is_kept_longer(make_agent, two_steps, echo, now):
    # The steps' agent keeps its runs a year: its steps stay, and so does their flow.
    echo.retain_succeeded_days = 365
    echo.save(update_fields=["retain_succeeded_days"])
    flow, steps = finished_flow(two_steps, at=days_before(now, 40))

    report = retention_run(now=now)

    assert exists(flow) and all(exists(s) for s in steps)
    assert report.kept == 1 and report.executions == 0


def test_a_step_never_goes_while_its_flow_runs(two_steps, now):
    started = days_before(now, 40)
    flow = flow_started(two_steps, {"n": 1}, at=started)
    first = step_ended(flow, "a", result={}, at=started + timedelta(seconds=1))
    assert flow.status == Execution.Status.RUNNING
    assert first.status == Execution.Status.SUCCEEDED

    retention_run(now=now)

    assert exists(flow) and exists(first)


# --- Batches, budget, dry run -----------------------------------------------------------------


def test_many_rows_go_in_batches_of_the_given_size(make_agent, make_execution, now):
    agent = make_agent()
    old = [make_execution(agent, "succeeded", at=days_before(now, 40 + i)) for i in range(7)]
    young = make_execution(agent, "succeeded", at=days_before(now, 1))
    batches = []

    report = retention_run(now=now, batch=3, progress=lambda r, counts: batches.append(counts))

    assert not any(exists(e) for e in old) and exists(young)
    assert report.batches == 3
    assert [counts["executions"] for counts in batches] == [3, 3, 1]


def test_a_run_out_of_time_stops_between_batches_and_the_next_one_finishes(
    make_agent, make_execution, now
):
    agent = make_agent()
    old = [make_execution(agent, "succeeded", at=days_before(now, 40 + i)) for i in range(5)]

    first = retention_run(now=now, batch=2, max_seconds=0)

    # One batch always runs (the oldest first); then the budget is spent.
    assert (first.batches, first.executions, first.complete) == (1, 2, False)
    assert [exists(e) for e in old] == [True, True, True, False, False]

    second = retention_run(now=now, batch=2)

    assert (second.executions, second.complete) == (3, True)
    assert not any(exists(e) for e in old)


@pytest.fixture
def history(make_agent, make_execution, told, two_steps, now):
    """A mix of old and young runs of several agents, flows and Celery results."""
    for days in (35, 45, 95):
        finished_with_everything(make_execution, told, "succeeded", at=days_before(now, days))
    finished_with_everything(make_execution, told, "failed", at=days_before(now, 95))
    finished_with_everything(make_execution, told, "failed", at=days_before(now, 50))
    brief = make_agent(retain_succeeded_days=2)
    for days in (1, 3, 4):
        make_execution(brief, "succeeded", at=days_before(now, days))
    for days in (20, 40, 60):
        finished_flow(two_steps, at=days_before(now, days))
    make_execution(brief, "running", at=days_before(now, 300))
    for i, days in enumerate((10, 40, 50)):
        result = TaskResult.objects.create(task_id=f"task-{i}", status="SUCCESS")
        group = GroupResult.objects.create(group_id=f"group-{i}")
        # Celery writes date_done itself (auto_now): moved back as if written then.
        TaskResult.objects.filter(pk=result.pk).update(date_done=days_before(now, days))
        GroupResult.objects.filter(pk=group.pk).update(date_done=days_before(now, days))


def test_a_dry_run_deletes_nothing_and_counts_what_a_real_run_deletes(history, now):
    before = table_sizes()

    dry = retention_run(now=now, batch=2, dry_run=True)

    assert table_sizes() == before

    real = retention_run(now=now, batch=2)

    assert dry.counts() == real.counts()
    assert dry.agents == real.agents
    assert dry.batches == real.batches
    after = table_sizes()
    gone = {label: before[label] - after[label] for label in before}
    assert {KINDS[label]: n for label, n in gone.items() if n} == real.counts()
    assert real.counts()["executions"] == 3 + 1 + 2 + 2 * 3  # told, brief, two flows of 3
    assert real.counts()["task results"] == real.counts()["group results"] == 2


def test_old_celery_results_go_after_the_succeeded_days(now, settings):
    settings.CONVEYOR_RETAIN_SUCCEEDED_DAYS = 7
    old = TaskResult.objects.create(task_id="old", status="SUCCESS")
    young = TaskResult.objects.create(task_id="young", status="FAILURE")
    TaskResult.objects.filter(pk=old.pk).update(date_done=days_before(now, 8))
    TaskResult.objects.filter(pk=young.pk).update(date_done=days_before(now, 6))

    report = retention_run(now=now, batch=1)

    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["young"]
    assert report.counts() == {"task results": 1}


def test_celerys_own_clean_up_in_one_delete_is_off():
    assert django_settings.CELERY_RESULT_EXPIRES is None


# --- Artifacts and rollups --------------------------------------------------------------------


@pytest.mark.skipif(not apps.is_installed("artifacts"), reason="the artifacts app is not installed")
def test_an_old_runs_artifacts_go_with_it_files_and_all(
    make_agent, make_execution, now, django_capture_on_commit_callbacks
):
    from artifacts.models import Artifact, artifacts_storage
    from artifacts.services import artifact_save

    agent = make_agent()
    old = make_execution(agent, "succeeded", at=days_before(now, 40))
    young = make_execution(agent, "succeeded", at=days_before(now, 1))
    gone = artifact_save(execution=old, attempt=1, name="report.csv", data=b"a,b\n1,2\n")
    kept = artifact_save(execution=young, attempt=1, name="report.csv", data=b"a,b\n3,4\n")
    storage = artifacts_storage()
    assert storage.exists(gone.file.name)

    with django_capture_on_commit_callbacks(execute=True):
        report = retention_run(now=now)

    assert list(Artifact.objects.all()) == [kept]
    assert not storage.exists(gone.file.name) and storage.exists(kept.file.name)
    assert report.counts() == {"executions": 1, "attempts": 1, "events": 3, "artifacts": 1}
    storage.delete(kept.file.name)


def test_the_rollups_of_what_goes_are_written_before_it_goes(make_agent, make_execution, now):
    agent = make_agent()
    old = make_execution(agent, "succeeded", at=days_before(now, 40))
    hour = old.created_at.replace(minute=0, second=0, microsecond=0)

    retention_run(now=now)

    assert not exists(old)
    rollup = Rollup.objects.get(agent=agent, period=Rollup.Period.HOUR, start=hour)
    assert (rollup.succeeded, rollup.failed, rollup.attempts) == (1, 0, 1)


def test_a_dry_run_writes_no_rollups(make_agent, make_execution, now):
    make_execution(make_agent(), "succeeded", at=days_before(now, 40))

    retention_run(now=now, dry_run=True)

    assert not Rollup.objects.exists()


# --- The daily task ---------------------------------------------------------------------------


def test_the_daily_task_sends_itself_again_while_rows_are_left(
    make_agent, make_execution, now, settings, django_capture_on_commit_callbacks
):
    settings.CONVEYOR_RETENTION_BATCH = 2
    settings.CONVEYOR_RETENTION_MAX_SECONDS = 0
    agent = make_agent()
    old = [make_execution(agent, "succeeded", at=days_before(now, 40 + i)) for i in range(3)]

    with django_capture_on_commit_callbacks() as sent:
        apply_retention()

    assert len(sent) == 1  # the next task, not run here
    assert sum(exists(e) for e in old) == 1

    settings.CONVEYOR_RETENTION_MAX_SECONDS = 60
    with django_capture_on_commit_callbacks() as sent:
        apply_retention()

    assert sent == []
    assert not any(exists(e) for e in old)


def test_beat_sends_the_task_once_a_day_to_the_maintenance_queue():
    from celery.schedules import crontab

    entry = django_settings.CELERY_BEAT_SCHEDULE["conveyor-retention"]

    assert entry["task"] == apply_retention.name == "executions.retention"
    assert entry["options"]["queue"] == django_settings.CONVEYOR_MAINTENANCE_QUEUE
    assert entry["schedule"] == crontab(minute="15", hour="3")


def test_the_policy_reads_the_settings_and_the_agents(make_agent, now, settings):
    settings.CONVEYOR_RETAIN_SUCCEEDED_DAYS = 10
    settings.CONVEYOR_RETAIN_FAILED_DAYS = 20
    agent = make_agent(retain_failed_days=5)

    policy = current_policy(now=now)

    assert [(r.days, sorted(r.agents), r.others) for r in policy.rules] == [
        (10, [], True),
        (20, [agent.pk], True),
        (5, [agent.pk], False),
    ]
    assert policy.results_cutoff == now - timedelta(days=10)


def test_nothing_to_delete_is_a_complete_run_of_no_batches(now):
    report = retention_run(now=now, max_seconds=0)

    assert (report.batches, report.counts(), report.complete) == (0, {}, True)
