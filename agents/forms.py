"""Forms of the agent pages. Validation of the agent itself lives in agents.services."""

import json
from typing import Any

from django import forms

from executions.errors import CATEGORIES

from .models import Agent


def parse_json_text(text: str) -> Any:
    """Parse JSON typed by a person; errors say where, in words."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise forms.ValidationError(
            f"This is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from None
    except RecursionError:
        raise forms.ValidationError("This JSON is nested too deeply.") from None


class JSONInputField(forms.CharField):
    widget = forms.Textarea(
        attrs={"rows": 6, "spellcheck": "false", "placeholder": '{"key": "value"}'}
    )

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(strip=False, **kwargs)

    def clean(self, value):
        return parse_json_text(super().clean(value) or "")


class RunForm(forms.Form):
    input = JSONInputField(label="Input (JSON)", help_text="Leave empty to run without input.")


class AgentForm(forms.ModelForm):
    retry_on = forms.MultipleChoiceField(
        # Only temporary problems: retrying never fixes bad credentials, input or settings.
        choices=[(key, info.title) for key, info in CATEGORIES.items() if info.retryable],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        label="Retry on",
        help_text="Which kinds of error are retried automatically.",
    )

    class Meta:
        model = Agent
        fields = (
            "name",
            "description",
            "max_retries",
            "retry_backoff",
            "retry_backoff_max",
            "retry_jitter",
            "retry_on",
            "timeout",
            "priority",
            "queue",
        )
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}
        labels = {
            "retry_backoff": "First retry after (s)",
            "retry_backoff_max": "Longest wait (s)",
            "retry_jitter": "Randomise waits",
            "timeout": "Timeout (s)",
        }
        help_texts = {
            "queue": "The Celery queue its runs go to. Workers must listen on it (the standard "
            "workers listen on the default queue).",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A declared field gets no initial value from the model: take the instance's (a new
        # agent's instance carries the installation's defaults).
        self.initial.setdefault("retry_on", list(self.instance.retry_on or []))

    def _post_clean(self):
        # Model validation runs in agents.services, with the kind's config, in one place.
        pass


class SecretsForm(forms.Form):
    """Write-only secrets: values are never shown; blank keeps what is set."""

    add = forms.CharField(
        required=False,
        label="Add or replace secrets",
        widget=forms.Textarea(
            attrs={
                "rows": 3,
                "spellcheck": "false",
                "autocomplete": "off",
                "placeholder": "api_token=…",
            }
        ),
        help_text="One NAME=value per line. Values are stored encrypted and never shown again.",
    )

    def __init__(self, *args, existing=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.existing = sorted(existing)
        if self.existing:
            self.fields["remove"] = forms.MultipleChoiceField(
                choices=[(name, name) for name in self.existing],
                required=False,
                widget=forms.CheckboxSelectMultiple,
                label="Remove secrets",
            )

    def clean_add(self):
        values = {}
        for number, line in enumerate(self.cleaned_data["add"].splitlines(), 1):
            if not line.strip():
                continue
            name, sep, value = line.partition("=")
            name = name.strip()
            if not sep or not name or not value:
                raise forms.ValidationError(f"Line {number} is not NAME=value.")
            if not name.replace("_", "").replace("-", "").isalnum():
                raise forms.ValidationError(
                    f"Line {number}: a name uses letters, digits, - and _ only."
                )
            values[name] = value
        return values

    def changes(self) -> dict[str, str | None]:
        changes: dict[str, str | None] = dict.fromkeys(self.cleaned_data.get("remove", []))
        changes.update(self.cleaned_data["add"])
        return changes
