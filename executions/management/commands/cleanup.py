"""``manage.py cleanup``: run retention by hand (``executions.retention``): delete the finished
executions past their retention, with everything that belongs to them, and old Celery results,
in small batches, printing each batch as it goes and what went, by kind of row and by agent.

``--dry-run`` reads and counts the same batches and deletes nothing (nor writes rollups).
``--batch`` sets the batch size, ``--max-seconds`` a time budget (stopped by it, the command
says so; run it again to go on: nothing is left half done). Exit status 0 either way.
"""

from __future__ import annotations

import argparse
import logging

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from agents.models import Agent
from executions.retention import Report, current_policy, retention_run

AGENTS_LISTED = 50


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Give a whole number, not “{text}”.") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"Give a number of at least 1, not {value}.")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Give a number of seconds, not “{text}”.") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"Give a number of seconds of 0 or more, not {value:g}.")
    return value


class Command(BaseCommand):
    help = (
        "Delete finished executions older than their retention (and everything that belongs to "
        "them), and old Celery results, in small batches. --dry-run only counts."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be deleted, per kind of row and per agent; delete nothing.",
        )
        parser.add_argument(
            "--batch",
            type=positive_int,
            default=None,
            help="Top-level executions per batch (one transaction each). "
            "Default: CONVEYOR_RETENTION_BATCH.",
        )
        parser.add_argument(
            "--max-seconds",
            type=seconds,
            default=None,
            help="Stop between batches after this many seconds (at least one batch runs). "
            "Default: no limit.",
        )

    def handle(self, *args, dry_run: bool, batch: int | None, max_seconds: float | None, **kw):
        size = batch or settings.CONVEYOR_RETENTION_BATCH
        now = timezone.now()
        policy = current_policy(now=now)
        if dry_run:
            self.stdout.write("Dry run: nothing is deleted.")
        self.stdout.write("Finished executions are deleted this long after they ended:")
        for rule in policy.rules:
            self.stdout.write(f"  {rule.describe()}")
        self.stdout.write(
            f"Celery results: after {settings.CONVEYOR_RETAIN_SUCCEEDED_DAYS} days. "
            f"At most {size:,} executions a batch (one transaction each; each rule above has "
            "batches of its own)."
        )
        verb = "would delete" if dry_run else "deleted"

        def progress(report: Report, counts: dict[str, int]) -> None:
            done = ", ".join(f"{n:,} {kind}" for kind, n in counts.items()) or "nothing"
            self.stdout.write(
                f"batch {report.batches}: {verb} {done}; {report.executions:,} executions so far"
            )

        # Each batch is printed here: the retention log's line for it would say it twice.
        retention_log = logging.getLogger("conveyor.retention")
        level = retention_log.level
        retention_log.setLevel(max(logging.WARNING, level))
        try:
            report = retention_run(
                now=now, batch=size, max_seconds=max_seconds, dry_run=dry_run, progress=progress
            )
        finally:
            retention_log.setLevel(level)
        self.summary(report)

    def summary(self, report: Report) -> None:
        verb = "Would delete" if report.dry_run else "Deleted"
        counts = report.counts()
        if not counts:
            self.stdout.write(f"Nothing to delete ({report.seconds:.1f} s).")
        else:
            width = max(len(kind) for kind in counts)
            self.stdout.write(f"{verb}, in {report.batches} batches ({report.seconds:.1f} s):")
            for kind, n in counts.items():
                self.stdout.write(f"  {kind:<{width}}  {n:>12,}")
        if report.agents:
            self.stdout.write(f"{verb} executions by agent:")
            names = {
                agent.pk: f"{agent.owner}/{agent.name}"
                for agent in Agent.objects.filter(pk__in=list(report.agents)).select_related(
                    "owner"
                )
            }
            listed = [
                (names.get(pk, f"agent {pk}"), n)
                for pk, n in report.agents.most_common(AGENTS_LISTED)
            ]
            width = max(len(name) for name, _ in listed)
            for name, n in listed:
                self.stdout.write(f"  {name:<{width}}  {n:>12,}")
            ranked = report.agents.most_common()
            if len(ranked) > AGENTS_LISTED:
                rest = sum(n for _, n in ranked[AGENTS_LISTED:])
                self.stdout.write(f"  and {len(ranked) - AGENTS_LISTED} more agents: {rest:,}")
        if report.kept:
            self.stdout.write(
                f"Kept {report.kept:,} flows old enough to go: a step of each is still running "
                "or kept longer by its agent."
            )
        if not report.complete:
            self.stdout.write(
                self.style.WARNING(
                    "Stopped by --max-seconds before the end; run it again to go on."
                )
            )
