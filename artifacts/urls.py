"""Under /executions/<execution uuid>/files/ (config/urls.py)."""

from django.urls import path

from . import views

app_name = "artifacts"
urlpatterns = [
    path("<uuid:uuid>/", views.artifact_download, name="download"),
]
