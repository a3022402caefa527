"""GET /api/v1/executions/<id>/artifacts/<artifact id>: a file an execution's agent saved.

For the execution's owner and for staff; anyone else gets the 404 an unknown id gets (the rule
is ``artifacts.selectors.artifact_for_download``, shared with the page). The file comes as an
attachment whatever the ``Accept`` header says; errors come in the API's JSON format.
"""

from __future__ import annotations

import uuid

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.views import APIView

from artifacts.downloads import ArtifactMissing, file_response
from artifacts.selectors import artifact_for_download

from .errors import ANY_REQUEST, error_responses


class FileOrJsonError(BaseContentNegotiation):
    """A download answers with the file itself, never 406; its errors use the JSON renderer."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class ExecutionArtifactView(APIView):
    content_negotiation_class = FileOrJsonError

    @extend_schema(
        tags=["executions"],
        operation_id="executions_artifact_download",
        summary="Download a file an execution's agent saved",
        description="The file, as an attachment (`Content-Disposition: attachment`), with the "
        "content type it was saved with. Its address is the `download_url` of the file in the "
        "execution's `artifacts`.",
        parameters=[
            OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH),
            OpenApiParameter("artifact_id", OpenApiTypes.UUID, OpenApiParameter.PATH),
        ],
        responses={
            (200, "*/*"): OpenApiResponse(OpenApiTypes.BINARY, description="The file."),
            **error_responses(404, *ANY_REQUEST),
        },
    )
    def get(self, request, id, artifact_id):
        try:
            execution_id, wanted = uuid.UUID(str(id)), uuid.UUID(str(artifact_id))
        except ValueError:
            raise NotFound("Not found.") from None
        artifact = artifact_for_download(
            user=request.user, execution_id=execution_id, artifact_id=wanted
        )
        if artifact is None:
            raise NotFound("Not found.")
        try:
            return file_response(artifact)
        except ArtifactMissing as exc:
            raise NotFound(exc.message) from None
