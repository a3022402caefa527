"""/api/v1/: the router's endpoints, the OpenAPI schema and its docs page."""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from . import views
from .artifact_views import ExecutionArtifactView
from .bulk_views import BulkActionViewSet

app_name = "api"

router = SimpleRouter(trailing_slash=False)
router.register("agents", views.AgentViewSet, basename="agent")
# Before "executions": /executions/bulk is not an execution's id.
router.register("executions/bulk", BulkActionViewSet, basename="bulk-action")
router.register("executions", views.ExecutionViewSet, basename="execution")
router.register("channels", views.ChannelViewSet, basename="channel")

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves the page's start-up script from ?script= rather than inline, as the
    # Content-Security-Policy (config/security.py) requires.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    *router.urls,
    re_path(
        r"^executions/(?P<id>[^/.]+)/artifacts/(?P<artifact_id>[^/.]+)$",
        ExecutionArtifactView.as_view(),
        name="execution-artifact",
    ),
    # Anything else under /api/v1/ answers in the API's format, not with the HTML 404 page.
    re_path(r"^.*$", views.not_found),
]
