"""The optional daily or weekly digest email: runs, success rate, failing and slowest agents."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db.models import Avg, Count, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from executions.humanize import seconds_in_words
from executions.models import Execution

from .models import Preferences

logger = logging.getLogger("conveyor.notifications")

PERIODS = {
    Preferences.Digest.DAILY: timedelta(days=1),
    Preferences.Digest.WEEKLY: timedelta(days=7),
}


@dataclass
class Digest:
    period: str
    since: datetime
    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    failing: list[tuple[str, int, str]] = field(default_factory=list)  # name, failures, url
    slowest: list[tuple[str, float, str]] = field(default_factory=list)  # name, seconds, url

    @property
    def success_rate(self) -> float | None:
        ended = self.succeeded + self.failed
        return None if not ended else 100 * self.succeeded / ended

    def lines(self) -> list[str]:
        rate = self.success_rate
        lines = [
            f"Your Conveyor {self.period} digest, since {self.since:%d %b %Y, %H:%M} UTC.",
            f"Runs: {self.runs}; succeeded: {self.succeeded}; failed: {self.failed}"
            + (f"; success rate {rate:.0f} %." if rate is not None else "."),
        ]
        if self.failing:
            lines.append("Failing agents:")
            for name, n, url in self.failing:
                lines.append(f"  {name}: {n} failed run{'s' if n != 1 else ''} ({url})")
        if self.slowest:
            lines.append("Slowest agents (average run):")
            lines += [f"  {name}: {seconds_in_words(s)} ({url})" for name, s, url in self.slowest]
        return lines


def build(*, user, period: str, at: datetime) -> Digest:
    since = at - PERIODS[period]
    runs = Execution.objects.filter(owner=user, created_at__gte=since, parent__isnull=True)
    counts = runs.aggregate(
        total=Count("pk"),
        succeeded=Count("pk", filter=Q(status=Execution.Status.SUCCEEDED)),
        failed=Count("pk", filter=Q(status=Execution.Status.FAILED)),
    )
    digest = Digest(
        period="daily" if period == Preferences.Digest.DAILY else "weekly",
        since=since,
        runs=counts["total"],
        succeeded=counts["succeeded"],
        failed=counts["failed"],
    )
    base = settings.CONVEYOR_BASE_URL
    failing = (
        runs.filter(status=Execution.Status.FAILED)
        .values("agent__uuid", "agent__name")
        .annotate(n=Count("pk"))
        .order_by("-n", "agent__name")[:5]
    )
    digest.failing = [
        (r["agent__name"], r["n"], base + reverse("agents:detail", args=[r["agent__uuid"]]))
        for r in failing
    ]
    slowest = (
        runs.filter(status=Execution.Status.SUCCEEDED, duration__isnull=False)
        .values("agent__uuid", "agent__name")
        .annotate(avg=Avg("duration"))
        .order_by("-avg", "agent__name")[:5]
    )
    digest.slowest = [
        (
            r["agent__name"],
            r["avg"].total_seconds(),
            base + reverse("agents:detail", args=[r["agent__uuid"]]),
        )
        for r in slowest
    ]
    return digest


def send_due(*, at: datetime | None = None) -> int:
    """Send every digest that is due (its period has passed since the last one). Returns how
    many were sent."""
    at = at or timezone.now()
    sent = 0
    for prefs in Preferences.objects.exclude(digest="").select_related("user"):
        period = PERIODS.get(prefs.digest)
        if period is None or not prefs.user.email:
            continue
        if prefs.last_digest_at is not None and at - prefs.last_digest_at < period - timedelta(
            minutes=5
        ):
            continue
        # Claimed first (compare-and-set), so two beats never send the same digest twice.
        if not Preferences.objects.filter(pk=prefs.pk, last_digest_at=prefs.last_digest_at).update(
            last_digest_at=at
        ):
            continue
        digest = build(user=prefs.user, period=prefs.digest, at=at)
        text = "\n".join(digest.lines())
        mail = EmailMultiAlternatives(
            subject=f"[Conveyor] Your {digest.period} digest",
            body=text,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[prefs.user.email],
        )
        mail.attach_alternative(
            "".join(f"<p>{escape(line)}</p>" for line in digest.lines()), "text/html"
        )
        mail.send()
        sent += 1
    return sent
