import zoneinfo

from django.conf import settings
from django.shortcuts import render
from django.utils import timezone


class UserTimezoneMiddleware:
    """Show times in the browser's time zone.

    The base template stores ``Intl.DateTimeFormat().resolvedOptions().timeZone`` in the ``tz``
    cookie; until it is known (the very first page) times show in the server's zone.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        name = request.COOKIES.get("tz", "")
        try:
            timezone.activate(zoneinfo.ZoneInfo(name)) if name else timezone.deactivate()
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            timezone.deactivate()
        request.timezone_name = timezone.get_current_timezone_name()
        return self.get_response(request)


class FormTooLargeMiddleware:
    """A page form bigger than ``DATA_UPLOAD_MAX_MEMORY_SIZE`` gets the friendly 413 page.

    Django refuses such a body only when something reads it (the CSRF check, a form), and then
    answers through ``handler400`` — or, under DEBUG (as ``make run`` is), with its technical
    error page. Checking the declared Content-Length first gives people the same page in both;
    a body without one still reaches ``handler400``. The API and webhooks answer in their JSON
    format through their own checks.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and not for_programs(request):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                return form_too_large(request)
        return self.get_response(request)


# Paths whose clients are programs: their errors stay in the JSON error format.
JSON_PATHS = ("/api/", "/hooks/")


def for_programs(request) -> bool:
    return request.path_info.startswith(JSON_PATHS)


def form_too_large(request):
    """The page a person gets for a form too large to read (here or from handler400)."""
    return render(request, "413.html", status=413)
