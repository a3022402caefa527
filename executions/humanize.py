"""Small helpers that turn numbers into the words pages and messages use."""


def seconds_in_words(seconds: float) -> str:
    """3 -> "3 s", 90 -> "1 min 30 s", 600 -> "10 min", 7200 -> "2 h"."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min" + (f" {secs} s" if secs else "")
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h" + (f" {minutes} min" if minutes else "")
