"""The ``function`` kind: runs a Python callable registered with ``@agent_function``."""

from __future__ import annotations

from typing import Any

from django import forms

from ..functions import all_functions, get_function
from .base import ConfigurationError, Kind, RunContext


class FunctionConfigForm(forms.Form):
    function = forms.ChoiceField(
        choices=(),
        help_text="The registered Python function this agent runs.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Read at form time: functions register when apps are ready.
        # A new agent starts with none chosen (the first in the list would be a guess); a
        # required field, so leaving it says "This field is required." next to it.
        self.fields["function"].choices = [("", "Choose a function…")] + [
            (f.name, f"{f.name} — {f.description}" if f.description else f.name)
            for f in all_functions()
        ]


class FunctionKind(Kind):
    name = "function"
    label = "Python function"
    description = (
        "Runs a Python function registered in an installed app's agent_functions.py. "
        "This is how teams plug in their own work: LLM calls, browser automation, data jobs."
    )
    config_form = FunctionConfigForm

    def summary(self, config, secrets=None):
        fn = get_function(config.get("function", ""))
        text = config.get("function", "")
        if fn and fn.description:
            text = f"{text} — {fn.description}"
        return [("Function", text)]

    def validate_input(self, config, input):
        fn = get_function(config.get("function", ""))
        if fn is not None and fn.validate_input is not None:
            fn.validate_input(input)

    def input_example(self, config):
        fn = get_function(config.get("function", ""))
        return fn.input_example if fn is not None else None

    def run(self, ctx: RunContext, input: Any) -> Any:
        name = ctx.config.get("function", "")
        fn = get_function(name)
        if fn is None:
            raise ConfigurationError(
                f"No agent function named “{name}” is registered on this worker. Check the "
                "agent's settings, and that the app defining it is installed on every worker."
            )
        return fn.func(ctx, input)


kind = FunctionKind()
