"""Numbers into the words pages use."""

from executions.humanize import seconds_in_words, time_left


def test_time_left_comes_from_the_runs_progress_when_it_reports_progress():
    assert time_left(progress=25, elapsed=30, median=10)["left"] == 90
    assert time_left(progress=25, elapsed=30, median=10)["source"] == "progress"
    before_progress = time_left(progress=0, elapsed=4, median=10)
    assert (before_progress["left"], before_progress["source"]) == (6, "history")
    assert time_left(progress=0, elapsed=16, median=10)["over"]
    assert time_left(progress=0, elapsed=4, median=None) is None


def test_seconds_read_as_a_person_would_say_them():
    assert [seconds_in_words(s) for s in (3, 90, 600, 7200)] == [
        "3 s",
        "1 min 30 s",
        "10 min",
        "2 h",
    ]
