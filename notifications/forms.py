"""Forms of the notification settings page. Validation of a channel lives in
notifications.services (``channel_validate``); these forms only read what was typed."""

from django import forms

from .models import Channel, Preferences


class ChannelForm(forms.Form):
    """A new channel: its kind, a name, and where it sends."""

    kind = forms.ChoiceField(choices=Channel.Kind.choices, initial=Channel.Kind.EMAIL)
    name = forms.CharField(
        max_length=100,
        help_text="So you can tell your channels apart in an agent's settings (e.g. “ops”).",
    )
    target = forms.CharField(
        max_length=2000,
        label="Send to",
        widget=forms.TextInput(
            attrs={"placeholder": "ops@example.com or https://…", "autocomplete": "off"}
        ),
        help_text="Email: an email address. Webhook and Slack-compatible webhook: the https:// "
        "address Conveyor POSTs to.",
    )


class ChannelEditForm(forms.Form):
    """A channel's name and address. The address is not shown back (a webhook's URL may carry
    a token): left empty, it stays as it is."""

    name = forms.CharField(max_length=100)
    target = forms.CharField(
        max_length=2000,
        required=False,
        label="Send to",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
        help_text="Leave empty to keep the current address.",
    )

    def __init__(self, *args, channel: Channel, shown_target: str = "", **kwargs):
        kwargs.setdefault("prefix", f"edit-{channel.uuid.hex[:12]}")
        kwargs.setdefault("initial", {"name": channel.name})
        super().__init__(*args, **kwargs)
        self.channel = channel
        self.fields["target"].widget.attrs["placeholder"] = shown_target

    def changes(self) -> dict[str, str]:
        """The fields to pass to ``channel_update``: the name, and the address if one was typed."""
        changes = {"name": self.cleaned_data["name"]}
        if self.cleaned_data["target"].strip():
            changes["target"] = self.cleaned_data["target"]
        return changes


class DigestForm(forms.ModelForm):
    class Meta:
        model = Preferences
        fields = ("digest",)
        labels = {"digest": "How often"}
        widgets = {"digest": forms.Select}
