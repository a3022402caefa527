import zoneinfo

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
