from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from executions.views import home

urlpatterns = [
    path("", home, name="home"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("agents/", include("agents.urls")),
    path("executions/", include("executions.urls")),
    path("admin/", admin.site.urls),
]
