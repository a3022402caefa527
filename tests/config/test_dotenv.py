"""config/dotenv.py: manage.py reads ./.env with honcho's rules, as `make run` does."""

import pytest
from honcho.environ import parse as honcho_parse

from config.dotenv import load_dotenv, parse_dotenv

SAMPLE = """\
# A comment line
DEBUG=true
DATABASE_URL=postgres://conveyor@db:5432/conveyor   # a comment after a value
QUOTED="two words"
SINGLE='no $EXPANSION here'
ESCAPES=a\\nb\\tc
EMPTY=
EQUALS=a=b
not an assignment
export EXPORTED=skipped-as-by-honcho
"""


def test_it_reads_a_file_exactly_as_honcho_does():
    assert parse_dotenv(SAMPLE) == honcho_parse(SAMPLE)
    assert parse_dotenv(SAMPLE)["QUOTED"] == "two words"
    assert parse_dotenv(SAMPLE)["DATABASE_URL"] == "postgres://conveyor@db:5432/conveyor"


def test_its_values_win_over_the_shell(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("DEBUG=true\nPORT=9000\n")
    environ = {"DEBUG": "false", "HOME": "/home/alice"}
    load_dotenv(env_file, environ)
    assert environ == {"DEBUG": "true", "PORT": "9000", "HOME": "/home/alice"}


@pytest.mark.parametrize("name", ["missing", "a-directory"])
def test_no_file_changes_nothing(tmp_path, name):
    (tmp_path / "a-directory").mkdir()
    environ = {"DEBUG": "false"}
    assert load_dotenv(tmp_path / name, environ) == {}
    assert environ == {"DEBUG": "false"}


def test_a_line_with_an_unclosed_quote_is_skipped():
    assert parse_dotenv('A="unclosed\nB=1\n') == {"B": "1"}
