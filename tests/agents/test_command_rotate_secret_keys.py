"""manage.py rotate_secret_keys: rotating the keys of agent secrets (new keys come from
generate_secret_key)."""

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from agents.models import Agent

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()
SECRETS = {"api_token": "tok-123456", "password": "hunter22"}


def rotate() -> str:
    out = StringIO()
    call_command("rotate_secret_keys", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_secrets_still_decrypt_with_only_the_new_key_after_rotation(make_agent):
    with override_settings(CONVEYOR_SECRET_KEYS=[KEY_A]):
        agent = make_agent(secrets=SECRETS)
        make_agent()  # no secrets: nothing to re-encrypt

    with override_settings(CONVEYOR_SECRET_KEYS=[KEY_B, KEY_A]):
        output = rotate()

    assert "Re-encrypted 1 row with the newest key; 0 already used it." in output
    assert "can be removed" in output
    with override_settings(CONVEYOR_SECRET_KEYS=[KEY_B]):
        assert Agent.objects.get(pk=agent.pk).secrets.reveal() == SECRETS


@pytest.mark.django_db
def test_without_rotation_the_old_secrets_need_the_old_key(make_agent):
    # The check above is meaningful: the cached keys follow the setting.
    with override_settings(CONVEYOR_SECRET_KEYS=[KEY_A]):
        agent = make_agent(secrets=SECRETS)

    with override_settings(CONVEYOR_SECRET_KEYS=[KEY_B]), pytest.raises(ImproperlyConfigured):
        Agent.objects.get(pk=agent.pk)


@pytest.mark.django_db
def test_a_second_rotation_has_nothing_left_to_do(make_agent):
    with override_settings(CONVEYOR_SECRET_KEYS=[KEY_A]):
        make_agent(secrets=SECRETS)

    with override_settings(CONVEYOR_SECRET_KEYS=[KEY_B, KEY_A]):
        rotate()
        output = rotate()

    assert "Re-encrypted 0 rows with the newest key; 1 already used it." in output


@pytest.mark.django_db
def test_rows_no_key_can_decrypt_are_named_and_fail_the_command(make_agent):
    with override_settings(CONVEYOR_SECRET_KEYS=[KEY_A]):
        agent = make_agent(secrets=SECRETS)

    with override_settings(CONVEYOR_SECRET_KEYS=[KEY_B]), pytest.raises(CommandError) as caught:
        rotate()

    assert f"agents.Agent {agent.pk}" in str(caught.value)
