"""The compare page: two of the owner's runs side by side (executions.compare)."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from .compare import LAST_SUCCESS, PREVIOUS, CompareRefused, compare_runs, resolve_other
from .views import _owned_execution


@login_required
def compare_pick(request, uuid):
    """``?with=previous``, ``?with=last-success`` or ``?with=<a run's id or address>``: on to
    the compare page, or this run's "compare with" form again, saying what was wrong."""
    execution = _owned_execution(request, uuid)
    if "with" not in request.GET:  # nothing asked yet: the form
        return render(
            request, "executions/compare_pick.html", {"execution": execution, "given": ""}
        )
    given = request.GET["with"]
    try:
        other = resolve_other(execution, given, owner=request.user)
    except CompareRefused as refused:
        return render(
            request,
            "executions/compare_pick.html",
            {
                "execution": execution,
                "error": refused.message,
                "given": "" if given in (PREVIOUS, LAST_SUCCESS) else given,
            },
            status=404 if refused.code == "not_found" else 400,
        )
    return redirect("executions:compare", uuid=execution.uuid, other=other.uuid)


@login_required
def compare(request, uuid, other):
    """Both runs must be the viewer's: either one not found is a 404."""
    execution = _owned_execution(request, uuid)
    second = _owned_execution(request, other)
    comparison = compare_runs(one=execution, other=second)
    return render(
        request,
        "executions/compare.html",
        {
            "execution": execution,
            "c": comparison,
            "before": comparison.before,
            "after": comparison.after,
        },
    )
