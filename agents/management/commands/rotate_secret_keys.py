"""``manage.py rotate_secret_keys``: re-encrypt every stored secret with the newest key.

Rotation (see ``agents.secrets``): put a new key first in ``CONVEYOR_SECRET_KEYS`` on every
process, run this command, then drop the old key. A row already encrypted with the newest key is
left alone, so running it again is cheap and reports 0 when the old key can go.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken
from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db.models import TextField, Value
from django.db.models.functions import Cast

from agents.secrets import EncryptedSecretsField, rotate


def encrypted_fields():
    """(model, field name) for every EncryptedSecretsField of every installed model."""
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if isinstance(field, EncryptedSecretsField):
                yield model, field.name


class Command(BaseCommand):
    help = (
        "Re-encrypt every agent's secrets with the first key in CONVEYOR_SECRET_KEYS, so that "
        "the older keys can be removed afterwards."
    )

    def handle(self, *args, **options):
        keys = settings.CONVEYOR_SECRET_KEYS
        try:
            newest = Fernet(keys[0])
        except (IndexError, ValueError, TypeError):
            raise CommandError(
                "The first key in CONVEYOR_SECRET_KEYS is not a Fernet key; make one with "
                "`python manage.py generate_secret_key`."
            ) from None

        rotated = current = changed = 0
        broken: list[str] = []
        for model, name in encrypted_fields():
            # Cast to a plain TextField: the raw token, not the decrypted mapping that the
            # field's from_db_value would return.
            rows = (
                model._default_manager.annotate(token=Cast(name, TextField()))
                .exclude(token="")
                .values_list("pk", "token")
            )
            for pk, token in rows.iterator(chunk_size=500):
                try:
                    newest.decrypt(token.encode())
                except InvalidToken:
                    pass
                else:
                    current += 1
                    continue
                try:
                    new_token = rotate(token)
                except InvalidToken:
                    broken.append(f"{model._meta.label} {pk}")
                    continue
                # Compare-and-set on the token read: a row saved meanwhile (by a process that
                # already encrypts with the newest key) is not overwritten with older values.
                updated = (
                    model._default_manager.annotate(token=Cast(name, TextField()))
                    .filter(pk=pk, token=token)
                    .update(**{name: Value(new_token, output_field=TextField())})
                )
                if updated:
                    rotated += 1
                else:
                    changed += 1

        self.stdout.write(
            f"Re-encrypted {rotated} row{'s' if rotated != 1 else ''} with the newest key; "
            f"{current} already used it."
        )
        if changed:
            self.stdout.write(
                self.style.WARNING(
                    f"{changed} row{'s were' if changed != 1 else ' was'} changed while this ran; "
                    "run the command again."
                )
            )
        if broken:
            raise CommandError(
                "These rows cannot be decrypted with any key in CONVEYOR_SECRET_KEYS (was a key "
                f"removed too early?): {', '.join(broken)}."
            )
        if not changed and len(keys) > 1:
            self.stdout.write(
                "Every secret now uses the first key: the other keys in CONVEYOR_SECRET_KEYS can "
                "be removed."
            )
