from django.urls import path

from . import views

app_name = "ops"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("workers/", views.workers_panel, name="workers"),
    path("backlog/", views.backlog_panel, name="backlog"),
    path("breakers/close/", views.breaker_close_view, name="breaker_close"),
]
