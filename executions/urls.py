from django.urls import path

from . import views

app_name = "executions"
urlpatterns = [
    path("", views.execution_list, name="list"),
    path("<uuid:uuid>/", views.execution_detail, name="detail"),
    path("<uuid:uuid>/live/", views.execution_live, name="live"),
    path("<uuid:uuid>/cancel/", views.execution_cancel_view, name="cancel"),
    path("<uuid:uuid>/retry/", views.execution_retry_view, name="retry"),
]
