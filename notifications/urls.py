from django.urls import path

from . import views

app_name = "notifications"
urlpatterns = [
    path("", views.channels, name="channels"),
    path("<uuid:uuid>/edit/", views.channel_edit, name="channel_edit"),
    path("<uuid:uuid>/on/", views.channel_enable, name="channel_enable"),
    path("<uuid:uuid>/off/", views.channel_disable, name="channel_disable"),
    path("<uuid:uuid>/test/", views.channel_test, name="channel_test"),
    path("<uuid:uuid>/rotate/", views.channel_rotate, name="channel_rotate"),
    path("<uuid:uuid>/rotate/finish/", views.channel_rotate_finish, name="channel_rotate_finish"),
    path("<uuid:uuid>/delete/", views.channel_delete, name="channel_delete"),
]
