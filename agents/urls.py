from django.urls import path

from . import schedule_views, views, webhook_views

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
    path("<uuid:uuid>/delete/", views.agent_delete, name="delete"),
    path("<uuid:uuid>/schedules/new/", schedule_views.schedule_new, name="schedule_new"),
    path(
        "<uuid:uuid>/schedules/preview/",
        schedule_views.schedule_preview,
        name="schedule_preview",
    ),
    path(
        "<uuid:uuid>/schedules/<uuid:schedule_uuid>/edit/",
        schedule_views.schedule_edit,
        name="schedule_edit",
    ),
    path(
        "<uuid:uuid>/schedules/<uuid:schedule_uuid>/pause/",
        schedule_views.schedule_pause,
        name="schedule_pause",
    ),
    path(
        "<uuid:uuid>/schedules/<uuid:schedule_uuid>/resume/",
        schedule_views.schedule_resume,
        name="schedule_resume",
    ),
    path(
        "<uuid:uuid>/schedules/<uuid:schedule_uuid>/delete/",
        schedule_views.schedule_delete,
        name="schedule_delete",
    ),
    path("<uuid:uuid>/webhook/enable/", webhook_views.enable, name="webhook_enable"),
    path("<uuid:uuid>/webhook/disable/", webhook_views.disable, name="webhook_disable"),
    path("<uuid:uuid>/webhook/rotate/", webhook_views.rotate, name="webhook_rotate"),
    path("<uuid:uuid>/webhook/rotate/finish/", webhook_views.rotate_finish, name="webhook_finish"),
]
