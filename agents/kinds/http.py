"""The ``http`` kind (placeholder until the real one lands)."""

from django import forms

from .base import Kind


class HttpConfigForm(forms.Form):
    url = forms.URLField()


class HttpKind(Kind):
    name = "http"
    label = "HTTP request"
    description = "Calls an HTTP endpoint."
    config_form = HttpConfigForm


kind = HttpKind()
