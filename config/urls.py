from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.shortcuts import render
from django.urls import include, path

from agents.webhook_views import webhook_receive
from common.errors import error_response
from config.middleware import for_programs, form_too_large
from executions.views import home
from ops.views import healthz, metrics

urlpatterns = [
    path("", home, name="home"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("agents/", include("agents.urls")),
    path("executions/", include("executions.urls")),
    path("executions/<uuid:execution>/files/", include("artifacts.urls")),
    path("ops/", include("ops.urls")),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("api/v1/", include("api.urls")),
    path("hooks/<str:agent_id>/", webhook_receive, name="webhook"),
    path("settings/tokens/", include("api.token_urls")),
    path("settings/notifications/", include("notifications.urls")),
    path("admin/", admin.site.urls),
]

# Django raises these while reading a request that is too large (a body over
# DATA_UPLOAD_MAX_MEMORY_SIZE, too many fields or files), wherever the body is first read: often
# in the CSRF check, before any view runs. They reach handler400.
TOO_LARGE = (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)


def bad_request(request, exception=None):
    """A 400 page; a request that is too large gets a 413 that says so (a page for people, the
    JSON error format for the API and webhooks)."""
    too_large = isinstance(exception, TOO_LARGE)
    if for_programs(request):
        if too_large:
            return error_response(413, "too_large", "The request body is too large.")
        return error_response(400, "malformed", "The request could not be read.")
    if too_large:
        return form_too_large(request)
    return render(request, "400.html", status=400)


handler400 = bad_request
