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


def time_left(*, progress: int, elapsed: float, median: float | None) -> dict | None:
    """How long a running attempt has left, for "about N s left".

    1. From the run itself while it reports progress (1 to 99 %): the time taken so far,
       scaled to the part still to do.
    2. Otherwise from the agent's history: its median successful run less the time taken;
       ``over`` once the attempt has taken half as long again as usual.
    3. None when neither is known.
    """
    if 0 < progress < 100:
        return {
            "left": elapsed * (100 - progress) / progress,
            "over": False,
            "median": median,
            "source": "progress",
        }
    if median:
        return {
            "left": max(0.0, median - elapsed),
            "over": elapsed > median * 1.5,
            "median": median,
            "source": "history",
        }
    return None
