from django.urls import path

from . import token_views

app_name = "tokens"
urlpatterns = [
    path("", token_views.token_list, name="list"),
    path("<uuid:uuid>/revoke/", token_views.token_revoke_view, name="revoke"),
]
