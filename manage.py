#!/usr/bin/env python
import os
import sys
from pathlib import Path


def main():
    from config.dotenv import load_dotenv

    # ./.env wins over the shell, as under `make run` (honcho), so that a command typed by hand
    # uses the same database and settings as the running processes.
    load_dotenv(Path(__file__).resolve().parent / ".env")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from importlib import import_module

    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    # A bad setting (e.g. CONVEYOR_QUEUES) is said in one line naming it, not a traceback.
    try:
        import_module(os.environ["DJANGO_SETTINGS_MODULE"])
    except ImproperlyConfigured as exc:
        sys.exit(f"Conveyor cannot start: {exc}")

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
