"""manage.py generate_secret_key: a new key for agent secrets, ready to put in the settings."""

from io import StringIO

from cryptography.fernet import Fernet
from django.core.management import call_command


def test_generate_secret_key_prints_a_fernet_key_alone_on_stdout():
    out, err = StringIO(), StringIO()

    call_command("generate_secret_key", stdout=out, stderr=err)

    Fernet(out.getvalue().strip())  # raises if it is not a key
    assert "CONVEYOR_SECRET_KEYS" in err.getvalue()
