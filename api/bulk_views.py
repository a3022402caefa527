"""/api/v1/executions/bulk: retry or cancel every execution a filter selects
(``executions.bulk``), previewed first, done in the background.

* ``POST /executions/bulk`` with ``{"action": "retry", "filter": {...}, "preview": true}``: the
  counts, nothing changed (200). Without ``preview``: the action is recorded and sent to a
  worker (202, its address in Location).
* ``GET /executions/bulk/{id}``: its progress and outcome. ``GET /executions/bulk``: yours,
  newest first.

The filter takes the executions list's query parameters as JSON (``executions.filters``), so a
bulk action selects what ``GET /executions`` with the same filter lists. Yours only, as
everywhere in the API.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.response import Response

from executions.bulk import (
    BULK_MAX,
    BulkRefused,
    bulk_action_create,
    bulk_preview,
    reason_words,
)
from executions.filters import FILTER_NAMES, FILTER_OBJECT, MULTIPLE, InvalidFilter
from executions.models import BulkAction

from .errors import Conflict, Unprocessable, error_responses
from .pagination import KeysetPagination
from .serializers import _absolute
from .throttling import RunRateThrottle
from .views import READ, WRITE, ApiViewMixin

FILTER_HELP = (
    "The executions list's filters, as JSON: "
    + ", ".join(f"`{name}`" for name in FILTER_NAMES)
    + ' (e.g. `{"status": ["failed"], "agent": "<id>", "error_category": ["timeout"], '
    '"created_after": "2026-11-01T00:00:00Z"}`). A name it does not know is a 422, not ignored; '
    + ", ".join(f"`{name}`" for name in MULTIPLE)
    + " take a list (any of its values), the others one value. `bulk`: a bulk action's id (the "
    "retries it created, or the executions it cancelled). `{}` selects all your executions."
)

ACTIONS = " or ".join(BulkAction.Action.values)


class BulkRequestSerializer(serializers.Serializer):
    action = serializers.ChoiceField(
        choices=BulkAction.Action.choices,
        help_text="`retry`: failed or cancelled executions not yet retried, each as a new "
        "execution (a flow's steps through their flow). `cancel`: queued, retrying and running "
        "ones.",
        error_messages={
            "required": f"Give an action: {ACTIONS}.",
            "null": f"Give an action: {ACTIONS}.",
            "invalid_choice": f"Unknown action “{{input}}”: give {ACTIONS}.",
        },
    )
    filter = serializers.DictField(
        required=False,
        default=dict,
        help_text=FILTER_HELP,
        # Braces doubled: DRF formats these messages.
        error_messages={"not_a_dict": FILTER_OBJECT.replace("{", "{{").replace("}", "}}")},
    )
    preview = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Only count: change nothing.",
        error_messages={"invalid": "Give true or false."},
    )

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            unknown = sorted(str(k) for k in set(data) - set(self.fields))
            if unknown:
                accepted = ", ".join(self.fields)
                raise serializers.ValidationError(
                    {key: [f"Unknown field. Accepted fields: {accepted}."] for key in unknown}
                )
        return super().to_internal_value(data)


class BulkPreviewSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=BulkAction.Action.choices)
    filter = serializers.DictField(help_text="The filter as it would be stored (normalised).")
    matching = serializers.IntegerField(help_text="Your executions the filter selects.")
    count = serializers.IntegerField(help_text="Of those, how many the action would act on.")
    message = serializers.CharField(
        source="headline", help_text="“This will retry 183 executions.”"
    )
    left_out = serializers.ListField(
        child=serializers.CharField(),
        help_text="What the filter selects that the action leaves alone, and why.",
    )
    too_many = serializers.BooleanField(
        help_text=f"More than one action covers ({BULK_MAX}): creating it would be refused."
    )


class BulkActionSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    url = serializers.SerializerMethodField()
    action = serializers.ChoiceField(choices=BulkAction.Action.choices, read_only=True)
    status = serializers.ChoiceField(
        choices=BulkAction.Status.choices,
        read_only=True,
        help_text="pending, running, done, or failed (an unexpected error stopped it).",
    )
    status_label = serializers.CharField(source="get_status_display", read_only=True)
    is_final = serializers.BooleanField(read_only=True)
    filter = serializers.DictField(read_only=True)
    by = serializers.CharField(
        source="owner.get_username", read_only=True, help_text="Who asked for it."
    )
    via = serializers.ChoiceField(choices=BulkAction.Via.choices, read_only=True)
    previewed = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="The count the confirmed preview announced."
    )
    total = serializers.IntegerField(
        read_only=True,
        help_text="Executions it acts on: those that matched when it was created (later ones "
        "are not swept in).",
    )
    done = serializers.IntegerField(read_only=True, help_text="Retried or cancelled.")
    skipped = serializers.IntegerField(
        read_only=True, help_text="Left alone (already retried, finished meanwhile, paused agent)."
    )
    failed = serializers.IntegerField(
        read_only=True, help_text="Refused (an input the agent no longer takes)."
    )
    processed = serializers.IntegerField(read_only=True, help_text="done + skipped + failed.")
    percent = serializers.IntegerField(read_only=True, help_text="0 to 100.")
    reasons = serializers.DictField(
        child=serializers.IntegerField(),
        read_only=True,
        help_text="Why executions were skipped or failed: a code and how many.",
    )
    reasons_text = serializers.SerializerMethodField()
    error = serializers.CharField(read_only=True, help_text="Why it stopped, when it failed.")
    created_at = serializers.DateTimeField(read_only=True)
    started_at = serializers.DateTimeField(read_only=True, allow_null=True)
    finished_at = serializers.DateTimeField(read_only=True, allow_null=True)

    def get_url(self, action) -> str:
        return _absolute(
            self.context.get("request"), reverse("api:bulk-action-detail", args=[action.uuid])
        )

    def get_reasons_text(self, action) -> list[str]:
        return reason_words(action.reasons)


class BulkActionPagination(KeysetPagination):
    keys = (("-created_at", "datetime"), ("-id", "int"))


@extend_schema(tags=["executions"])
class BulkActionViewSet(ApiViewMixin, viewsets.GenericViewSet):
    """Bulk actions: a retry or cancel of every execution of yours that a filter selects."""

    queryset = BulkAction.objects.none()
    serializer_class = BulkActionSerializer
    pagination_class = BulkActionPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return BulkAction.objects.none()
        return BulkAction.objects.filter(owner=self.request.user).select_related("owner")

    def get_throttles(self):
        if self.action == "create":
            return [RunRateThrottle()]
        return super().get_throttles()

    @extend_schema(
        summary="List your bulk actions",
        responses={200: BulkActionSerializer(many=True), **error_responses(400, *READ)},
    )
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        summary="Retry or cancel every execution a filter selects (preview first)",
        description=(
            "With `preview: true`: how many executions the action would act on, and what it "
            "leaves out; nothing changes (200). Without: the action is recorded and done in the "
            "background in batches (202; follow `url` for its progress). The set is fixed "
            "now: executions that fail afterwards are not included. Each execution goes "
            "through the same rules as a single retry or cancel: one already retried is not "
            "retried again. When the filter selects nothing to act on, no action is created: "
            "409 `nothing_to_do` with the preview's words. Running the same action again acts "
            "on what is new since: the retries an earlier retry created that failed in turn "
            "are retried. The action's `bulk` filter lists what it made or changed. At most "
            f"{BULK_MAX} executions per action. Counted as one run request against "
            "CONVEYOR_API_RUN_RATE."
        ),
        request=BulkRequestSerializer,
        examples=[
            OpenApiExample(
                "Preview a retry of today's timeouts",
                value={
                    "action": "retry",
                    "filter": {
                        "status": ["failed"],
                        "error_category": ["timeout"],
                        "created_after": "2026-11-30T00:00:00Z",
                    },
                    "preview": True,
                },
                request_only=True,
            ),
            OpenApiExample(
                "Cancel everything queued for one agent",
                value={
                    "action": "cancel",
                    "filter": {
                        "status": ["queued"],
                        "agent": "a11ce000-0000-4000-8000-000000000001",
                    },
                },
                request_only=True,
            ),
        ],
        responses={
            200: OpenApiResponse(BulkPreviewSerializer, description="The preview's counts."),
            202: OpenApiResponse(BulkActionSerializer, description="Recorded; under way."),
            **error_responses(409, 429, *WRITE),
        },
    )
    def create(self, request):
        serializer = BulkRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            if data["preview"]:
                preview = bulk_preview(
                    owner=request.user, action=data["action"], filter=data["filter"]
                )
                return Response(BulkPreviewSerializer(preview).data)
            action = bulk_action_create(
                owner=request.user,
                action=data["action"],
                filter=data["filter"],
                via=BulkAction.Via.API,
            )
        except InvalidFilter as exc:
            raise Unprocessable(exc.message, code="invalid_filter", details=exc.details) from None
        except BulkRefused as exc:
            if exc.code == "nothing_to_do":
                # As a retry of an execution already retried: a conflict with what is done.
                raise Conflict(exc.message, code=exc.code) from None
            field = "action" if exc.code == "unknown_action" else "filter"
            details = {field: [exc.message]}
            raise Unprocessable(exc.message, code=exc.code, details=details) from None
        body = BulkActionSerializer(action, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})

    @extend_schema(
        summary="A bulk action's progress and outcome",
        responses={200: BulkActionSerializer, **error_responses(404, *READ)},
    )
    def retrieve(self, request, id=None):
        return Response(self.get_serializer(self.get_object()).data)
