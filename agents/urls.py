from django.urls import path

from . import views

app_name = "agents"
urlpatterns = [
    path("", views.agent_list, name="list"),
    path("new/", views.agent_choose_kind, name="choose_kind"),
    path("new/<str:kind>/", views.agent_create, name="create"),
    path("<uuid:uuid>/", views.agent_detail, name="detail"),
    path("<uuid:uuid>/edit/", views.agent_edit, name="edit"),
    path("<uuid:uuid>/run/", views.agent_run, name="run"),
    path("<uuid:uuid>/pause/", views.agent_pause, name="pause"),
    path("<uuid:uuid>/resume/", views.agent_resume, name="resume"),
]
