"""The execution page's "Download support bundle" link: the run's support bundle
(``executions.bundle``) as a JSON file, for the run's owner only (anyone else gets the 404 an
unknown run gets); the traceback in it for staff, as on the page."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404

from .bundle import support_bundle_response
from .models import Execution


@login_required
def execution_bundle(request, uuid):
    execution = get_object_or_404(
        Execution.objects.select_related("agent__owner", "retry_of", "parent"),
        uuid=uuid,
        owner=request.user,
    )
    return support_bundle_response(execution, user=request.user)
