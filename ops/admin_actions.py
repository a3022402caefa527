"""What the admin's bulk actions share: one message that says what an action did, what it
skipped and why ("3 retried. 2 skipped: not failed or cancelled (1); agent paused (1).").

Actions call a service per row and count here (``ActionReport``); pause and resume, alike in
every admin that has them, are written once (``PauseResumeActions``). This module knows no
model.
"""

from __future__ import annotations

from collections import Counter

from django.contrib import admin, messages


class ActionReport:
    """Counts of one bulk action: ``done()`` per row changed, ``skip(reason)`` per row left as
    it was; ``send(modeladmin, request)`` tells the operator."""

    def __init__(self, verb: str):
        self.verb = verb
        self.done_count = 0
        self.skipped: Counter[str] = Counter()

    def done(self) -> None:
        self.done_count += 1

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] += count

    @property
    def text(self) -> str:
        text = f"{self.done_count} {self.verb}."
        if self.skipped:
            reasons = "; ".join(f"{reason} ({n})" for reason, n in self.skipped.most_common())
            text += f" {self.skipped.total()} skipped: {reasons}."
        return text

    @property
    def level(self) -> int:
        return messages.SUCCESS if self.done_count and not self.skipped else messages.WARNING

    def send(self, modeladmin, request) -> None:
        modeladmin.message_user(request, self.text, self.level)


class PauseResumeActions:
    """The "Pause selected …" and "Resume selected …" actions, for an admin whose ``pause(obj)``
    and ``resume(obj)`` call services that answer False when there was nothing to do:
    "2 paused. 1 skipped: already paused (1).". List them in the admin's ``actions``."""

    def pause(self, obj) -> bool:
        raise NotImplementedError

    def resume(self, obj) -> bool:
        raise NotImplementedError

    @admin.action(description="Pause selected %(verbose_name_plural)s", permissions=["change"])
    def pause_selected(self, request, queryset):
        self._switch_each(request, queryset, self.pause, verb="paused", unchanged="already paused")

    @admin.action(description="Resume selected %(verbose_name_plural)s", permissions=["change"])
    def resume_selected(self, request, queryset):
        self._switch_each(request, queryset, self.resume, verb="resumed", unchanged="not paused")

    def _switch_each(self, request, rows, switch, *, verb: str, unchanged: str) -> None:
        report = ActionReport(verb)
        for row in rows:
            if switch(row):
                report.done()
            else:
                report.skip(unchanged)
        report.send(self, request)
