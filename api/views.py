"""The REST API (/api/v1/): agents, runs, executions, logs, support bundles, stats, webhook
secrets and notification channels.

Thin views: each parses the request, calls one service and returns. Every queryset is the
caller's own objects, so someone else's id is a 404 like an unknown one. Errors leave through
``api.errors.exception_handler`` in the one format.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.urls import Resolver404, resolve
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from agents import services as agent_services
from agents import webhook_services
from agents.kinds.base import InvalidInputError
from agents.models import Agent
from executions.bundle import support_bundle_response
from executions.compare import CompareRefused, compare_runs, resolve_other
from executions.models import Execution
from executions.services import (
    BATCH_MAX,
    BatchRefused,
    ExecutionRefused,
    RunSpec,
    execution_cancel,
    execution_request,
    execution_request_batch,
    execution_retry,
)
from notifications import services as notification_services
from notifications.models import Channel
from ops.baseline import against_usual
from ops.selectors import agent_stats

from . import serializers as s
from .errors import (
    ANY_REQUEST,
    Conflict,
    InvalidQuery,
    Malformed,
    PayloadTooLarge,
    Unprocessable,
    body_too_large,
    error_response,
    error_responses,
    validation_details,
)
from .filters import ExecutionFilter, FilterBackend
from .pagination import AgentPagination, ExecutionPagination, KeysetPagination, LogPagination
from .throttling import RunRateThrottle

STATS_WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
IDEMPOTENCY_KEY_MAX = 200

# The documented errors: READ for GETs, ACTION for POSTs without a body (a browser session
# must send its CSRF token), WRITE for requests with a JSON body.
READ = ANY_REQUEST
ACTION = (*ANY_REQUEST, 403)
WRITE = (*ACTION, 415, 422)
IDEMPOTENCY_KEY_RULE = f"1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters"


class ApiViewMixin:
    """Shared by every API view: the body size limit is checked before anything else."""

    lookup_field = "uuid"
    lookup_url_kwarg = "id"

    def initial(self, request, *args, **kwargs):
        limit = settings.CONVEYOR_API_MAX_BODY_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise Malformed("Content-Length is not a number.") from None
        if length > limit:
            raise body_too_large(limit)
        super().initial(request, *args, **kwargs)

    def get_object(self):
        try:
            public_id = uuid.UUID(str(self.kwargs[self.lookup_url_kwarg]))
        except ValueError:
            raise NotFound("Not found.") from None
        obj = self.get_queryset().filter(uuid=public_id).first()
        if obj is None:
            raise NotFound("Not found.")
        return obj

    def username(self) -> str:
        return self.request.user.get_username()


def _invalid_input(exc: InvalidInputError) -> Unprocessable:
    return Unprocessable(exc.message, code="invalid_input", details={"input": [exc.message]})


def _batch_errors(errors) -> dict[str, list[str]]:
    """One run's serializer errors as ``{".field": [messages]}`` ("" for the run itself)."""
    if isinstance(errors, dict):
        return {
            ("" if field == "non_field_errors" else f".{field}"): [str(m) for m in messages]
            for field, messages in errors.items()
        }
    return {"": [str(m) for m in errors]}


def _batch_message(details: dict[str, list[str]]) -> str:
    """ "2 runs are not valid; none was started. runs[3].input: ...": the first few named."""
    runs = {key.partition("]")[0] for key in details}
    shown = "; ".join(
        f"{key}: {messages[0].rstrip('.')}" for key, messages in list(details.items())[:3]
    )
    more = f"; and {len(details) - 3} more" if len(details) > 3 else ""
    noun = "1 run is" if len(runs) == 1 else f"{len(runs)} runs are"
    return f"{noun} not valid; none was started. {shown}{more}."


def _created(serializer_data: dict, *, status_code: int) -> Response:
    return Response(
        serializer_data, status=status_code, headers={"Location": serializer_data["url"]}
    )


# --- Agents -----------------------------------------------------------------------------------


@extend_schema(tags=["agents"])
class AgentViewSet(ApiViewMixin, viewsets.GenericViewSet):
    """Agents: what runs. Secrets are write-only: the API returns their names, never values."""

    queryset = Agent.objects.none()
    serializer_class = s.AgentSerializer
    pagination_class = AgentPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Agent.objects.none()
        return Agent.objects.filter(owner=self.request.user).prefetch_related("notify_channels")

    def get_throttles(self):
        if self.action in ("run", "run_batch"):
            return [RunRateThrottle()]
        return super().get_throttles()

    def _agent_response(self, agent: Agent, status_code: int = 200) -> Response:
        data = s.AgentSerializer(agent, context=self.get_serializer_context()).data
        if status_code == status.HTTP_201_CREATED:
            return _created(data, status_code=status_code)
        return Response(data, status=status_code)

    @extend_schema(
        summary="List your agents",
        responses={200: s.AgentSerializer(many=True), **error_responses(400, *READ)},
    )
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        summary="Create an agent",
        request=s.AgentSerializer,
        examples=[
            OpenApiExample(
                "A function agent",
                value={
                    "name": "daily-digest",
                    "kind": "function",
                    "config": {"function": "demo.echo"},
                    "secrets": {"api_token": "s3cr3t"},
                    "max_retries": 3,
                },
                request_only=True,
            ),
            OpenApiExample(
                "A flow of your other agents",
                description="Steps name your agents by name or id (ids come back). A step's "
                "`input` may read the flow's input and earlier steps' results.",
                value={
                    "name": "fetch-and-notify",
                    "kind": "flow",
                    "config": {
                        "steps": [
                            {
                                "key": "fetch",
                                "agent": "fetch-page",
                                "input": {"url": "{{ input.url }}"},
                            },
                            {"key": "cool-off", "wait": {"seconds": 60}},
                            {
                                "key": "notify",
                                "agent": "send-mail",
                                "input": {"body": "{{ steps.fetch.result.body }}"},
                                "retry": {"max_retries": 2, "backoff": 5},
                            },
                        ],
                        "timeout": 3600,
                        "result": "last",
                    },
                },
                request_only=True,
            ),
        ],
        responses={201: s.AgentSerializer, **error_responses(*WRITE)},
    )
    def create(self, request):
        serializer = s.AgentSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        try:
            agent = agent_services.agent_create(owner=request.user, **serializer.validated_data)
        except DjangoValidationError as exc:
            raise Unprocessable(details=validation_details(exc)) from None
        return self._agent_response(agent, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Get an agent", responses={200: s.AgentSerializer, **error_responses(404, *READ)}
    )
    def retrieve(self, request, id=None):
        return self._agent_response(self.get_object())

    def _update(self, request, *, partial: bool) -> Response:
        agent = self.get_object()
        serializer_class = s.AgentSerializer if partial else s.AgentPutSerializer
        serializer = serializer_class(
            agent, data=request.data, partial=partial, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        try:
            agent_services.agent_update(agent=agent, **serializer.validated_data)
        except DjangoValidationError as exc:
            raise Unprocessable(details=validation_details(exc)) from None
        agent.refresh_from_db()
        return self._agent_response(agent)

    @extend_schema(
        summary="Replace an agent's settings",
        description="Like PATCH, but name, kind and config are required. Secrets still merge.",
        request=s.AgentPutSerializer,
        responses={200: s.AgentSerializer, **error_responses(404, *WRITE)},
    )
    def update(self, request, id=None):
        return self._update(request, partial=False)

    @extend_schema(
        summary="Change some of an agent's settings",
        request=s.AgentSerializer,
        responses={200: s.AgentSerializer, **error_responses(404, *WRITE)},
    )
    def partial_update(self, request, id=None):
        return self._update(request, partial=True)

    @extend_schema(
        summary="Delete an agent and its history",
        responses={
            204: OpenApiResponse(description="Deleted."),
            **error_responses(404, 409, *ACTION),
        },
    )
    def destroy(self, request, id=None):
        try:
            agent_services.agent_delete(agent=self.get_object())
        except agent_services.AgentBusy as exc:
            raise Conflict(exc.message, code=exc.code) from None
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Pause: refuse new runs",
        request=None,
        responses={200: s.AgentSerializer, **error_responses(404, *ACTION)},
    )
    @action(detail=True, methods=["post"])
    def pause(self, request, id=None):
        agent = self.get_object()
        agent_services.agent_pause(agent=agent)
        agent.refresh_from_db()
        return self._agent_response(agent)

    @extend_schema(
        summary="Resume a paused agent",
        request=None,
        responses={200: s.AgentSerializer, **error_responses(404, *ACTION)},
    )
    @action(detail=True, methods=["post"])
    def resume(self, request, id=None):
        agent = self.get_object()
        agent_services.agent_resume(agent=agent)
        agent.refresh_from_db()
        return self._agent_response(agent)

    @extend_schema(
        summary="Start a run",
        description=(
            "Queues an execution and answers 202 with it (and its URL in Location). With "
            "`run_at` or `delay_seconds` it starts no earlier than that. With an "
            "`Idempotency-Key` header, repeating the request returns the same execution (200); "
            "the same key with a different input is a 409. Run requests and retries are limited "
            "per token (CONVEYOR_API_RUN_RATE): past the rate, 429 with Retry-After."
        ),
        request=s.RunRequestSerializer,
        examples=[
            OpenApiExample("Now", value={"input": {"hello": "world"}}, request_only=True),
            OpenApiExample(
                "In ten minutes",
                value={"input": {"hello": "world"}, "delay_seconds": 600},
                request_only=True,
            ),
        ],
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": IDEMPOTENCY_KEY_MAX,
                    "pattern": "^[\\x20-\\x7e]+$",
                },
                OpenApiParameter.HEADER,
                description=(
                    f"Optional: {IDEMPOTENCY_KEY_RULE} (space to `~`); any other value is a "
                    "400. One key, one execution of this agent: the same key again answers 200 "
                    "with that execution, the same key with a different input is a 409."
                ),
            )
        ],
        responses={
            202: OpenApiResponse(s.ExecutionDetailSerializer, description="Queued."),
            200: OpenApiResponse(
                s.ExecutionDetailSerializer, description="Replay: the execution this key started."
            ),
            **error_responses(404, 409, 429, *WRITE),
        },
    )
    @action(detail=True, methods=["post"], url_path="runs")
    def run(self, request, id=None):
        agent = self.get_object()
        key = request.headers.get("Idempotency-Key")
        if key is not None and not (
            0 < len(key) <= IDEMPOTENCY_KEY_MAX and key.isascii() and key.isprintable()
        ):
            raise Malformed(
                f"Idempotency-Key must be {IDEMPOTENCY_KEY_RULE}.",
                code="bad_idempotency_key",
            )
        serializer = s.RunRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        value = data.get("input")
        now = timezone.now()
        not_before = data.get("run_at")
        if data.get("delay_seconds"):
            not_before = now + timedelta(seconds=data["delay_seconds"])
        try:
            execution = execution_request(
                agent=agent,
                trigger=Execution.Trigger.API,
                input=value,
                idempotency_key=f"api:{key}" if key is not None else None,
                not_before=not_before,
                at=now,
            )
        except InvalidInputError as exc:
            raise _invalid_input(exc) from None
        except ExecutionRefused as exc:
            raise Conflict(exc.message, code=exc.code) from None
        body = s.ExecutionDetailSerializer(execution, context=self.get_serializer_context()).data
        if execution.is_replay:
            return Response(body, status=status.HTTP_200_OK, headers={"Location": body["url"]})
        return _created(body, status_code=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Start many runs",
        description=(
            f"Starts up to {BATCH_MAX:,} runs of the agent in one request, each its own "
            "execution: `runs` is a list of run requests (`input`, `run_at` or `delay_seconds`, "
            "and an optional `idempotency_key`, which works like the Idempotency-Key header of a "
            "single run and shares its keys). Every run is checked first: if any is not valid, "
            "none is started and the 422 names each bad one by its index (`runs[3].input`); a "
            "key already used with another input is a 409 the same way. Runs whose key was used "
            "with the same input are not started again (`replay`: true). More than "
            f"{BATCH_MAX:,} runs, or a body over CONVEYOR_API_MAX_BODY_BYTES (1 MiB by "
            "default), is a 413: split the batch. The request counts once against the run rate "
            "(CONVEYOR_API_RUN_RATE)."
        ),
        request=s.BatchRequestSerializer,
        examples=[
            OpenApiExample(
                "Three runs",
                value={
                    "runs": [
                        {"input": {"n": 1}},
                        {"input": {"n": 2}, "idempotency_key": "order-2"},
                        {"input": {"n": 3}, "delay_seconds": 60},
                    ]
                },
                request_only=True,
            ),
        ],
        responses={
            202: OpenApiResponse(s.BatchResultSerializer, description="Queued."),
            **error_responses(404, 409, 413, 429, *WRITE),
        },
    )
    @action(detail=True, methods=["post"], url_path="runs/batch")
    def run_batch(self, request, id=None):
        agent = self.get_object()
        runs = request.data.get("runs") if isinstance(request.data, dict) else None
        if not isinstance(runs, list) or not runs:
            raise Unprocessable(
                'Send {"runs": [...]}: a list of 1 to '
                f"{BATCH_MAX:,} run requests, e.g. "
                '{"runs": [{"input": {...}}, {"input": {...}}]}.',
                details={"runs": ["A non-empty list of run requests."]},
            )
        if len(runs) > BATCH_MAX:
            raise PayloadTooLarge(
                f"{len(runs):,} runs in one request: at most {BATCH_MAX:,}. "
                "Send them in several requests.",
                code="too_many_runs",
            )
        unknown = sorted(set(request.data) - {"runs"})
        if unknown:
            raise Unprocessable(
                f"Unknown field {unknown[0]!r}: the body holds only `runs`.",
                details={key: ["Unknown field."] for key in unknown},
            )
        now = timezone.now()
        # One serializer for the list: its fields are set up once, not once a run.
        serializer = s.BatchRunSerializer(data=runs, many=True)
        if not serializer.is_valid():
            # By index: a dict of the bad runs (DRF 3.16), or a list with {} for the good ones.
            errors = serializer.errors
            pairs = errors.items() if isinstance(errors, dict) else enumerate(errors)
            details = {
                f"runs[{index}]{field}": messages
                for index, run_errors in sorted(pairs)
                for field, messages in _batch_errors(run_errors).items()
            }
            raise Unprocessable(_batch_message(details), details=details)
        specs = []
        for data in serializer.validated_data:
            not_before = data.get("run_at")
            if data.get("delay_seconds"):
                not_before = now + timedelta(seconds=data["delay_seconds"])
            key = data.get("idempotency_key")
            specs.append(
                RunSpec(
                    input=data.get("input"),
                    idempotency_key=f"api:{key}" if key is not None else None,
                    not_before=not_before,
                )
            )
        try:
            executions = execution_request_batch(
                agent=agent, trigger=Execution.Trigger.API, runs=specs, at=now
            )
        except BatchRefused as exc:
            found = {f"runs[{i}].{field}": [why] for i, (field, why) in exc.errors.items()}
            error = Unprocessable if exc.code == "invalid_input" else Conflict
            raise error(_batch_message(found), code=exc.code, details=found) from None
        except ExecutionRefused as exc:
            raise Conflict(exc.message, code=exc.code) from None
        replayed = sum(1 for execution in executions if execution.is_replay)
        body = {
            "created": len(executions) - replayed,
            "replayed": replayed,
            "runs": s.BatchRunResultSerializer(
                executions, many=True, context=self.get_serializer_context()
            ).data,
        }
        return Response(body, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Runs, success rate and durations over a window",
        parameters=[
            OpenApiParameter(
                "window",
                OpenApiTypes.STR,
                OpenApiParameter.QUERY,
                enum=[*STATS_WINDOWS],
                description="How far back: 24h, 7d (default) or 30d, in whole hours (the "
                "window starts on the hour; the current hour is its last).",
            )
        ],
        responses={200: s.StatsSerializer, **error_responses(400, 404, *READ)},
    )
    @action(detail=True, methods=["get"])
    def stats(self, request, id=None):
        agent = self.get_object()
        window = request.query_params.get("window", "7d")
        if window not in STATS_WINDOWS:
            raise _invalid_query("window", f"One of {', '.join(STATS_WINDOWS)}.")
        stats = agent_stats(agent=agent, span=STATS_WINDOWS[window])
        return Response(
            {
                "window": window,
                "since": stats.since,
                "runs": stats.runs,
                "succeeded": stats.succeeded,
                "failed": stats.failed,
                "success_rate": stats.success_rate,
                "p50_seconds": stats.p50,
                "p95_seconds": stats.p95,
                "baseline": s.BaselineSerializer(
                    against_usual(agents=[agent], now=timezone.now())[agent.pk].as_json()
                ).data,
            }
        )

    # --- Webhook ------------------------------------------------------------------------------

    def _webhook(self, agent: Agent, secret: str | None = None) -> Response:
        data = s.webhook_state(agent, self.request)
        if secret is not None:
            data["secret"] = secret
        return Response(data)

    @extend_schema(
        summary="The agent's webhook: URL, on or off, rotation under way",
        responses={200: s.WebhookStateSerializer, **error_responses(404, *READ)},
    )
    @action(detail=True, methods=["get"], url_path="webhook")
    def webhook(self, request, id=None):
        return self._webhook(self.get_object())

    @extend_schema(
        summary="Turn the webhook on",
        description="The first time, a signing secret is made and returned in `secret`, once.",
        request=None,
        responses={200: s.WebhookSecretSerializer, **error_responses(404, *ACTION)},
    )
    @action(detail=True, methods=["post"], url_path="webhook/enable")
    def webhook_enable(self, request, id=None):
        agent = self.get_object()
        return self._webhook(agent, webhook_services.webhook_enable(agent=agent))

    @extend_schema(
        summary="Turn the webhook off (calls get 404; secrets are kept)",
        request=None,
        responses={200: s.WebhookStateSerializer, **error_responses(404, *ACTION)},
    )
    @action(detail=True, methods=["post"], url_path="webhook/disable")
    def webhook_disable(self, request, id=None):
        agent = self.get_object()
        webhook_services.webhook_disable(agent=agent)
        return self._webhook(agent)

    @extend_schema(
        summary="Start a rotation: make the next secret",
        description=(
            "Returns the new secret once. Until the rotation finishes both the current and the "
            "new secret are accepted, so senders can switch at their pace."
        ),
        request=None,
        responses={200: s.WebhookSecretSerializer, **error_responses(404, *ACTION)},
    )
    @action(detail=True, methods=["post"], url_path="webhook/rotate")
    def webhook_rotate(self, request, id=None):
        agent = self.get_object()
        return self._webhook(agent, webhook_services.webhook_rotate_start(agent=agent))

    @extend_schema(
        summary="Finish the rotation: the old secret stops working",
        request=None,
        responses={200: s.WebhookStateSerializer, **error_responses(404, 409, *ACTION)},
    )
    @action(detail=True, methods=["post"], url_path="webhook/rotate/finish")
    def webhook_rotate_finish(self, request, id=None):
        agent = self.get_object()
        try:
            webhook_services.webhook_rotate_finish(agent=agent)
        except webhook_services.WebhookStateError as exc:
            raise Conflict(exc.message, code=exc.code) from None
        return self._webhook(agent)


def _invalid_query(name: str, message: str) -> InvalidQuery:
    return InvalidQuery(f"{name}: {message}", details={name: [message]})


# --- Executions -------------------------------------------------------------------------------


@extend_schema(tags=["executions"])
class ExecutionViewSet(ApiViewMixin, viewsets.GenericViewSet):
    """Executions: the runs of your agents, newest first."""

    queryset = Execution.objects.none()
    serializer_class = s.ExecutionSerializer
    pagination_class = ExecutionPagination
    filter_backends = [FilterBackend]
    filterset_class = ExecutionFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Execution.objects.none()
        return Execution.objects.filter(owner=self.request.user).select_related(
            "agent", "retry_of", "parent"
        )

    def get_throttles(self):
        if self.action == "retry":
            return [RunRateThrottle()]
        return super().get_throttles()

    def _execution(self, execution: Execution):
        """One execution on its own: with a flow's steps and its notifications."""
        return s.ExecutionDetailSerializer(execution, context=self.get_serializer_context()).data

    @extend_schema(
        summary="List your executions",
        responses={200: s.ExecutionSerializer(many=True), **error_responses(400, *READ)},
    )
    def list(self, request):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        summary="Get an execution",
        description="A flow's execution has its steps in `steps`; each step's own execution is "
        "listed by `?parent=<the flow's id>`. `deliveries`: what was sent about it to your "
        "notification channels, and how each try went.",
        responses={200: s.ExecutionDetailSerializer, **error_responses(404, *READ)},
    )
    def retrieve(self, request, id=None):
        return Response(self._execution(self.get_object()))

    @extend_schema(
        summary="An execution's log lines, oldest first",
        filters=False,
        responses={200: s.ExecutionLogSerializer(many=True), **error_responses(400, 404, *READ)},
    )
    @action(detail=True, methods=["get"], pagination_class=LogPagination, filter_backends=[])
    def logs(self, request, id=None):
        execution = self.get_object()
        page = self.paginate_queryset(execution.logs.all())
        return self.get_paginated_response(s.ExecutionLogSerializer(page, many=True).data)

    @extend_schema(
        summary="Download an execution's support bundle",
        description=(
            "One JSON file (`Content-Disposition: attachment`, named "
            "`conveyor-run-<id>.json`) with everything recorded about the run: Conveyor's "
            "version, the run and its timings, the agent's configuration as it is now with its "
            "version, input, result, error, every attempt with its worker host, every event "
            "and log line, a flow's steps and the names and sizes of its files. Secret values "
            "and values that look like secrets are replaced with `[secret removed]`. The "
            "traceback is included for staff only, as `error_detail` is."
        ),
        filters=False,
        responses={
            (200, "application/json"): OpenApiResponse(
                OpenApiTypes.OBJECT, description="The support bundle, as a file."
            ),
            **error_responses(404, *READ),
        },
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def bundle(self, request, id=None):
        return support_bundle_response(self.get_object(), user=request.user)

    @extend_schema(
        summary="Retry a failed or cancelled execution as a new one",
        description=(
            "The original is not changed. Optionally give a new `input`. A retried flow reuses "
            "the steps that succeeded (`reused_from`) and runs again from the step that did "
            "not. Counted with run requests against CONVEYOR_API_RUN_RATE: past the rate, 429 "
            "with Retry-After."
        ),
        request=s.RetryRequestSerializer,
        responses={
            201: OpenApiResponse(s.ExecutionDetailSerializer, description="The new execution."),
            **error_responses(404, 409, 429, *WRITE),
        },
    )
    @action(detail=True, methods=["post"], filter_backends=[])
    def retry(self, request, id=None):
        execution = self.get_object()
        serializer = s.RetryRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            new = execution_retry(
                execution=execution, by=self.username(), **serializer.validated_data
            )
        except InvalidInputError as exc:
            raise _invalid_input(exc) from None
        except ExecutionRefused as exc:
            raise Conflict(exc.message, code=exc.code) from None
        return _created(self._execution(new), status_code=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Compare two of your executions",
        description=(
            "`other`: another execution's id, `previous` (the run of the same agent created "
            "just before this one) or `last-success` (the agent's latest successful run other "
            "than this one). The two runs come back in the order they were created, `before` "
            "and `after`, each with the agent's configuration version it was created with "
            "(`configuration`: the settings that shape a run, secrets by name only; null when "
            "not recorded, for runs older than the record), its input, result, error, attempts "
            "(outcome, worker, waits before each, retry delay), timings in seconds and the "
            "waits' reasons; then the differences from `before` to `after` of the "
            "configuration, the input and the result (`changes`: `path`, `change` (`added`, "
            "`removed` or `changed`), `old`, `new`), and the log lines aligned by attempt "
            "(the first 300 lines of each run). Runs of different agents may be compared "
            "(`same_agent`: false)."
        ),
        parameters=[
            OpenApiParameter(
                "other",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                description="An execution id, `previous` or `last-success`.",
            )
        ],
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="The comparison."),
            **error_responses(400, 404, *READ),
        },
    )
    @action(
        detail=True,
        methods=["get"],
        url_path=r"compare/(?P<other>[^/.]+)",
        filter_backends=[],
        pagination_class=None,
    )
    def compare(self, request, id=None, other=None):
        execution = self.get_object()
        try:
            second = resolve_other(execution, other or "", owner=request.user)
        except CompareRefused as exc:
            if exc.code == "not_found":
                raise NotFound(exc.message) from None
            raise Malformed(exc.message, code="invalid_run") from None
        return Response(compare_runs(one=execution, other=second).as_dict())

    @extend_schema(
        summary="Cancel a queued, retrying or running execution",
        description="Cancelling a flow cancels its running steps and skips the others.",
        request=None,
        responses={
            202: OpenApiResponse(s.ExecutionDetailSerializer, description="Cancelled."),
            **error_responses(404, 409, *ACTION),
        },
    )
    @action(detail=True, methods=["post"], filter_backends=[])
    def cancel(self, request, id=None):
        execution = self.get_object()
        try:
            execution_cancel(execution=execution, by=self.username())
        except ExecutionRefused as exc:
            raise Conflict(exc.message, code=exc.code) from None
        execution.refresh_from_db()
        return Response(self._execution(execution), status=status.HTTP_202_ACCEPTED)


# --- Notification channels --------------------------------------------------------------------


class ChannelPagination(KeysetPagination):
    keys = (("name", "str"), ("id", "int"))


def _secret_refused(exc: DjangoValidationError, *, code: str) -> Conflict:
    """``channel_rotate_start``/``_finish`` refuse in words about the channel's state (not a
    webhook channel, no rotation under way): a 409, as for an agent's webhook."""
    return Conflict(" ".join(exc.messages), code=code)


@extend_schema(tags=["channels"])
class ChannelViewSet(ApiViewMixin, viewsets.GenericViewSet):
    """Notification channels: where you are told about your agents' runs. An agent names the
    channels it tells in ``notify_channels``. A webhook channel's signing secret is returned
    once, when it is made (and the next one when a rotation starts), never again."""

    queryset = Channel.objects.none()
    serializer_class = s.ChannelSerializer
    pagination_class = ChannelPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Channel.objects.none()
        return Channel.objects.filter(owner=self.request.user)

    def get_throttles(self):
        if self.action == "send_test":
            return [RunRateThrottle()]
        return super().get_throttles()

    def _channel(self, channel: Channel, *, secret: str | None = None, status_code: int = 200):
        data = s.ChannelSerializer(channel, context=self.get_serializer_context()).data
        if secret is not None:
            data["secret"] = secret
        if status_code == status.HTTP_201_CREATED:
            return _created(data, status_code=status_code)
        return Response(data, status=status_code)

    @extend_schema(
        summary="List your notification channels",
        responses={200: s.ChannelSerializer(many=True), **error_responses(400, *READ)},
    )
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        summary="Make a notification channel",
        description="A webhook channel's signing secret comes back in `secret`, this once.",
        request=s.ChannelSerializer,
        examples=[
            OpenApiExample(
                "A signed webhook",
                value={"kind": "webhook", "name": "ops", "target": "https://example.com/hooks"},
                request_only=True,
            ),
            OpenApiExample(
                "Email",
                value={"kind": "email", "name": "me", "target": "me@example.com"},
                request_only=True,
            ),
            OpenApiExample(
                "Slack or Discord",
                description="Discord: the channel webhook's URL with `/slack` at the end.",
                value={
                    "kind": "slack",
                    "name": "team chat",
                    "target": "https://hooks.slack.com/services/T000/B000/XXXX",
                },
                request_only=True,
            ),
        ],
        responses={201: s.ChannelSecretSerializer, **error_responses(*WRITE)},
    )
    def create(self, request):
        serializer = s.ChannelSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            with transaction.atomic():
                channel, secret = notification_services.channel_create(
                    owner=request.user, kind=data["kind"], name=data["name"], target=data["target"]
                )
                if data.get("is_enabled") is False:
                    notification_services.channel_update(channel=channel, is_enabled=False)
        except DjangoValidationError as exc:
            raise Unprocessable(details=validation_details(exc)) from None
        return self._channel(channel, secret=secret, status_code=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Get a notification channel",
        responses={200: s.ChannelSerializer, **error_responses(404, *READ)},
    )
    def retrieve(self, request, id=None):
        return self._channel(self.get_object())

    def _update(self, request, *, partial: bool) -> Response:
        channel = self.get_object()
        serializer = s.ChannelUpdateSerializer(
            channel, data=request.data, partial=partial, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        fields = {
            name: value
            for name, value in serializer.validated_data.items()
            if name in ("name", "target", "is_enabled")
        }
        try:
            notification_services.channel_update(channel=channel, **fields)
        except DjangoValidationError as exc:
            raise Unprocessable(details=validation_details(exc)) from None
        channel.refresh_from_db()
        return self._channel(channel)

    @extend_schema(
        summary="Replace a channel's name and target",
        description="Like PATCH, but name and target are required. The kind cannot change.",
        request=s.ChannelUpdateSerializer,
        responses={200: s.ChannelSerializer, **error_responses(404, *WRITE)},
    )
    def update(self, request, id=None):
        return self._update(request, partial=False)

    @extend_schema(
        summary="Change a channel's name, target, or turn it on or off",
        request=s.ChannelUpdateSerializer,
        responses={200: s.ChannelSerializer, **error_responses(404, *WRITE)},
    )
    def partial_update(self, request, id=None):
        return self._update(request, partial=True)

    @extend_schema(
        summary="Delete a channel",
        description="Its agents stop telling it; the record of what was sent to it goes too.",
        responses={204: OpenApiResponse(description="Deleted."), **error_responses(404, *ACTION)},
    )
    def destroy(self, request, id=None):
        notification_services.channel_delete(channel=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Send a test message now",
        description=(
            "Sends a message shaped like a real one (about no execution) and says how it went; "
            "nothing is recorded. Works on a channel that is turned off. Counted with run "
            "requests against CONVEYOR_API_RUN_RATE: past the rate, 429 with Retry-After."
        ),
        request=None,
        responses={200: s.ChannelTestSerializer, **error_responses(404, 429, *ACTION)},
    )
    @action(detail=True, methods=["post"], url_path="test")
    def send_test(self, request, id=None):
        sent = notification_services.channel_test(channel=self.get_object())
        return Response({"ok": sent.ok, "status_code": sent.status_code, "error": sent.error})

    @extend_schema(
        summary="Start a rotation of a webhook channel's secret: make the next one",
        description=(
            "Returns the new secret once, in `secret`. Until the rotation finishes, messages "
            "carry two signatures (one per secret) in webhook-signature, so the receiver can "
            "switch at its pace. Another rotation while one is under way replaces the next "
            "secret. 409 for an email or slack channel."
        ),
        request=None,
        responses={200: s.ChannelSecretSerializer, **error_responses(404, 409, *ACTION)},
    )
    @action(detail=True, methods=["post"], url_path="rotate")
    def rotate(self, request, id=None):
        channel = self.get_object()
        try:
            secret = notification_services.channel_rotate_start(channel=channel)
        except DjangoValidationError as exc:
            raise _secret_refused(exc, code="not_a_webhook") from None
        return self._channel(channel, secret=secret)

    @extend_schema(
        summary="Finish the rotation: only the new secret signs from now on",
        request=None,
        responses={200: s.ChannelSerializer, **error_responses(404, 409, *ACTION)},
    )
    @action(detail=True, methods=["post"], url_path="rotate/finish")
    def rotate_finish(self, request, id=None):
        channel = self.get_object()
        try:
            notification_services.channel_rotate_finish(channel=channel)
        except DjangoValidationError as exc:
            raise _secret_refused(exc, code="no_rotation") from None
        return self._channel(channel)


@csrf_exempt
def not_found(request, *args, **kwargs):
    """Any other path under /api/v1/, whatever the method: a 404 in the API's format (with a
    hint for a trailing slash, which the API's addresses do not have). Exempt from the CSRF
    check, which would otherwise answer a POST from a signed-in browser with Django's HTML 403
    page: nothing here reads the body or changes anything."""
    message = "There is no API endpoint at this address."
    if request.path.endswith("/") and len(request.path) > 1:
        try:
            match = resolve(request.path.rstrip("/"))
        except Resolver404:
            match = None
        if match is not None and match.func is not not_found:
            message += f" Did you mean {request.path.rstrip('/')} (without the final slash)?"
    return error_response(404, "not_found", message)
