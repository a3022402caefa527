"""``manage.py generate_secret_key``: a new Fernet key for ``CONVEYOR_SECRET_KEYS``."""

from cryptography.fernet import Fernet
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Print a new Fernet key for CONVEYOR_SECRET_KEYS (the keys that encrypt agent secrets)."

    def handle(self, *args, **options):
        # The key alone on stdout, so that `KEY=$(python manage.py generate_secret_key)` works;
        # the hint on stderr.
        self.stdout.write(Fernet.generate_key().decode())
        self.stderr.write(
            "Put it first in CONVEYOR_SECRET_KEYS (comma-separated, newest first), keep the "
            "older keys after it, then run `python manage.py rotate_secret_keys`.",
            style_func=lambda text: text,
        )
