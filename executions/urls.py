from django.urls import path

from . import bulk_views, bundle_views, compare_views, views

app_name = "executions"
urlpatterns = [
    path("", views.execution_list, name="list"),
    path("bulk/", bulk_views.bulk_new, name="bulk-new"),
    path("bulk/<uuid:uuid>/", bulk_views.bulk_detail, name="bulk"),
    path("bulk/<uuid:uuid>/live/", bulk_views.bulk_live, name="bulk-live"),
    path("<uuid:uuid>/", views.execution_detail, name="detail"),
    path("<uuid:uuid>/live/", views.execution_live, name="live"),
    path("<uuid:uuid>/cancel/", views.execution_cancel_view, name="cancel"),
    path("<uuid:uuid>/retry/", views.execution_retry_view, name="retry"),
    path("<uuid:uuid>/compare/", compare_views.compare_pick, name="compare-pick"),
    path("<uuid:uuid>/compare/<uuid:other>/", compare_views.compare, name="compare"),
    path("<uuid:uuid>/bundle/", bundle_views.execution_bundle, name="bundle"),
]
