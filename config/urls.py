from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from agents.webhook_views import webhook_receive
from executions.views import home
from ops.views import healthz, metrics

urlpatterns = [
    path("", home, name="home"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("agents/", include("agents.urls")),
    path("executions/", include("executions.urls")),
    path("ops/", include("ops.urls")),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("api/v1/", include("api.urls")),
    path("hooks/<str:agent_id>/", webhook_receive, name="webhook"),
    path("settings/tokens/", include("api.token_urls")),
    path("admin/", admin.site.urls),
]
