"""The encrypted secrets field and the masked Secrets mapping."""

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.test import override_settings

from agents import secrets as secret_store
from agents.models import Agent
from agents.secrets import Secrets

pytestmark = pytest.mark.django_db


def test_secrets_show_their_names_but_never_their_values():
    s = Secrets({"api_key": "k-123", "token": "t-456"})
    assert repr(s) == str(s) == "Secrets(api_key=***, token=***)"
    assert f"{s}" == "Secrets(api_key=***, token=***)"
    assert s["api_key"] == "k-123" and dict(s) == {"api_key": "k-123", "token": "t-456"}


def test_the_column_holds_ciphertext_that_the_newest_key_can_rotate(make_agent):
    key_a, key_b = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(CONVEYOR_SECRET_KEYS=[key_a]):
        agent = make_agent(secrets={"api_key": "value-under-a"})
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets FROM agents_agent WHERE id = %s", [agent.pk])
        (token,) = cursor.fetchone()
    assert "value-under-a" not in token

    with override_settings(CONVEYOR_SECRET_KEYS=[key_b, key_a]):
        rotated = secret_store.rotate(token)
        assert Agent.objects.get(pk=agent.pk).secrets["api_key"] == "value-under-a"
    with override_settings(CONVEYOR_SECRET_KEYS=[key_b]):
        assert secret_store.decrypt(rotated)["api_key"] == "value-under-a"


def test_a_missing_key_gives_an_operator_a_clear_error(make_agent):
    from django.core.exceptions import ImproperlyConfigured

    agent = make_agent(secrets={"api_key": "v-1234"})
    with (
        override_settings(CONVEYOR_SECRET_KEYS=[Fernet.generate_key().decode()]),
        pytest.raises(ImproperlyConfigured, match="rotate_secret_keys"),
    ):
        Agent.objects.get(pk=agent.pk)
