"""config/dotenv.py: manage.py reads ./.env with honcho's parser and precedence, as `make run`
does."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.dotenv import load_dotenv

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


def test_it_reads_quotes_comments_and_escapes(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(SAMPLE)
    values = load_dotenv(env_file, {})
    assert values["QUOTED"] == "two words"
    assert values["DATABASE_URL"] == "postgres://conveyor@db:5432/conveyor"
    assert values["DEBUG"] == "true" and "not" not in values


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


def test_a_file_honcho_cannot_read_is_refused_with_its_name(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text('A="unclosed\nB=1\n')
    with pytest.raises(ImproperlyConfigured, match=r"\.env cannot be read"):
        load_dotenv(env_file, {})
