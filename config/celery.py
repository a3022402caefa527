"""The Celery application shared by web, worker, beat and Flower."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("conveyor")
# Only documented setting names work with the CELERY namespace; see config/settings.py.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
