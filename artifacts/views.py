"""The download of an artifact from the execution page (signed in: its owner, or staff)."""

from django.contrib.auth.decorators import login_required
from django.http import Http404

from .downloads import ArtifactMissing, file_response
from .selectors import artifact_for_download


@login_required
def artifact_download(request, execution, uuid):
    """``execution``: the execution's uuid; ``uuid``: the artifact's."""
    found = artifact_for_download(user=request.user, execution_id=execution, artifact_id=uuid)
    if found is None:
        raise Http404("No such file.")
    try:
        return file_response(found)
    except ArtifactMissing as exc:
        raise Http404(exc.message) from None
