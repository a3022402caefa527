"""What a notification says, in one place: the email's subject and text, the Slack message and
the webhook's JSON body are all built from :func:`summary` of one delivery."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.urls import reverse

from executions.errors import CATEGORIES
from executions.humanize import seconds_in_words
from executions.models import Execution
from executions.templatetags.conveyor import duration as duration_words

OUTCOME_WORDS = {
    "execution.succeeded": "succeeded",
    "execution.failed": "failed",
    "execution.cancelled": "was cancelled",
    "execution.retrying": "failed an attempt and will retry",
    "agent.circuit_opened": "stopped starting runs: its circuit breaker opened",
    "agent.regressed": "does worse than usual",
}
REGRESSED_WHAT_TO_DO = (
    "Open a recent run and compare it with an earlier success to see what changed; the agent's "
    "page shows its figures against its usual ones."
)
CIRCUIT_WHAT_TO_DO = (
    "New runs wait; they do not fail. After the cool-down Conveyor lets one probe run through: "
    "its success closes the breaker and the waiting runs start. Check the service it calls; an "
    "operator can also close the breaker by hand on the operations dashboard."
)


def execution_url(execution: Execution) -> str:
    return settings.CONVEYOR_BASE_URL + reverse("executions:detail", args=[execution.uuid])


@dataclass(frozen=True)
class Summary:
    """Everything a message says about one event of one execution."""

    event: str
    agent: str
    outcome: str  # "failed", "succeeded", ...
    recovered: bool
    attempts: int
    max_attempts: int
    duration: float | None
    error_title: str
    error_message: str
    what_to_do: str
    url: str
    data: dict[str, Any]
    #: An event about the agent rather than one run: what it says, in place of the run's facts.
    about_agent: str = ""

    @property
    def headline(self) -> str:
        if self.about_agent:
            return self.about_agent.partition(":")[0]
        if self.recovered:
            return f"“{self.agent}” recovered: it succeeded again after failing"
        return f"“{self.agent}” {self.outcome}"

    def lines(self) -> list[str]:
        """The message as plain lines (email text, Slack text)."""
        if self.about_agent:
            return [self.about_agent, f"What to do: {self.what_to_do}", f"Open it: {self.url}"]
        lines = [self.headline + "."]
        if self.error_title:
            lines.append(f"{self.error_title}: {self.error_message}".strip())
        # A final failure's message already ends with what to do; a retry's does not.
        if (
            self.what_to_do
            and self.event != "execution.succeeded"
            and self.what_to_do not in self.error_message
        ):
            lines.append(f"What to do: {self.what_to_do}")
        tried = "1 attempt" if self.attempts == 1 else f"{self.attempts} attempts"
        facts = [f"{tried} of {self.max_attempts} allowed"]
        if self.duration is not None:
            facts.append(f"took {seconds_in_words(self.duration)}")
        lines.append(", ".join(facts) + ".")
        lines.append(f"Open it: {self.url}")
        return lines


def summary(*, execution: Execution, event: str, recovered: bool, at: datetime) -> Summary:
    if event == "agent.regressed":
        return regressed_summary(execution=execution)
    info = CATEGORIES.get(execution.error_category) if execution.error_category else None
    duration = execution.duration.total_seconds() if execution.duration else None
    url = execution_url(execution)
    error = None
    if execution.error_category:
        error = {
            "category": execution.error_category,
            "title": execution.error_title,
            "message": execution.error_message,
            "what_to_do": info.what_to_do if info else "",
        }
    data = {
        "execution": {
            "id": str(execution.uuid),
            "status": execution.status,
            "trigger": execution.trigger,
            "attempt": execution.attempt,
            "max_attempts": execution.max_attempts,
            "created_at": _iso(execution.created_at),
            "started_at": _iso(execution.started_at),
            "finished_at": _iso(execution.finished_at),
            "duration_seconds": duration,
            "next_attempt_at": _iso(execution.next_attempt_at),
            "result": execution.result if event == "execution.succeeded" else None,
            "error": error,
            "url": url,
            "parent": str(execution.parent.uuid) if execution.parent_id else None,
            "step_key": execution.step_key or None,
        },
        "agent": {"id": str(execution.agent.uuid), "name": execution.agent.name},
        "recovered": recovered,
    }
    return Summary(
        event=event,
        agent=execution.agent.name,
        outcome=OUTCOME_WORDS[event],
        recovered=recovered,
        attempts=execution.attempt,
        max_attempts=execution.max_attempts,
        duration=duration,
        error_title=execution.error_title,
        error_message=execution.error_message,
        what_to_do=CIRCUIT_WHAT_TO_DO
        if event == "agent.circuit_opened"
        else (info.what_to_do if info else ""),
        url=url,
        data=data,
    )


def regressed_summary(*, execution: Execution) -> Summary:
    """An agent worse than its usual (ops.baseline): its figures in words, sent with its latest
    finished run of the last day."""
    from ops.models import Regression  # ops reads notifications; this one lookup goes back

    regression = (
        Regression.objects.filter(execution=execution).order_by("-started_at", "-id").first()
    )
    agent = execution.agent
    url = execution_url(execution)
    agent_url = settings.CONVEYOR_BASE_URL + reverse("agents:detail", args=[agent.uuid])
    figures = None
    if regression is None:  # closed and deleted since (its agent's history was cleared)
        sentence = f"“{agent.name}” does worse than usual."
    elif regression.what == Regression.What.P95:
        sentence = (
            f"“{agent.name}” is slower than usual: 95% of its successful runs took up to "
            f"{duration_words(regression.last_value)} over the last day, against "
            f"{duration_words(regression.usual_value)} over the 14 days before "
            f"({regression.last_runs} runs)."
        )
    else:
        sentence = (
            f"“{agent.name}” succeeds less than usual: {round(regression.last_value * 100)}% of "
            f"its runs succeeded over the last day, against "
            f"{round(regression.usual_value * 100)}% over the 14 days before "
            f"({regression.last_runs} runs)."
        )
    if regression is not None:
        figures = {
            "what": regression.what,
            "since": _iso(regression.started_at),
            "last_day": regression.last_value,
            "usual": regression.usual_value,
            "last_day_runs": regression.last_runs,
            "usual_runs": regression.usual_runs,
            "threshold": regression.threshold,
            "unit": "seconds" if regression.what == Regression.What.P95 else "fraction",
        }
    return Summary(
        event="agent.regressed",
        agent=agent.name,
        outcome=OUTCOME_WORDS["agent.regressed"],
        recovered=False,
        attempts=execution.attempt,
        max_attempts=execution.max_attempts,
        duration=None,
        error_title="",
        error_message="",
        what_to_do=REGRESSED_WHAT_TO_DO,
        url=url,
        data={
            "agent": {"id": str(agent.uuid), "name": agent.name, "url": agent_url},
            "regression": figures,
            "execution": {"id": str(execution.uuid), "url": url},
        },
        about_agent=sentence,
    )


def test_summary(channel) -> Summary:
    """The message "send a test" sends: shaped like a real one, about no execution."""
    url = settings.CONVEYOR_BASE_URL + reverse("notifications:channels")
    return Summary(
        event="execution.succeeded",
        agent="Test from Conveyor",
        outcome="reached this channel (a test message)",
        recovered=False,
        attempts=1,
        max_attempts=1,
        duration=None,
        error_title="",
        error_message="",
        what_to_do="",
        url=url,
        data={"test": True, "channel": {"id": str(channel.uuid), "name": channel.name}},
    )


def webhook_body(summary: Summary, *, at: datetime) -> bytes:
    """The Standard Webhooks JSON body: ``type``, ``timestamp`` and ``data``."""
    body = {"type": summary.event, "timestamp": _iso(at), "data": summary.data}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def slack_body(summary: Summary) -> dict[str, Any]:
    """Slack's incoming-webhook format (Discord's ``/slack`` endpoints take it too)."""
    text = "\n".join(summary.lines())
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{summary.headline}*"}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "\n".join(summary.lines()[1:-1]) or " "},
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open the execution"},
                        "url": summary.url,
                    }
                ],
            },
        ],
    }


def email_subject(summary: Summary) -> str:
    return f"[Conveyor] {summary.headline}"[:200]


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
