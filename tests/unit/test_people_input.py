"""Parsing and checking the people `mlrp user add` and `mlrp user import` are given."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.schema import parse
from hub import accounts
from hub.people import Context, PeopleError, Person, check_people, parse_csv
from hub.storage import SQLRecords

pytestmark = pytest.mark.unit


@pytest.fixture
def ctx(records: SQLRecords, tmp_path: Path) -> Context:
    cfg = parse(
        {
            "hub": {"data_dir": str(tmp_path / "data")},
            "groups": {"students": [], "staff": []},
            "profiles": [{"slug": "cpu", "name": "CPU"}],
        }
    )
    return Context(cfg, records, hub=None)


def test_a_csv_gives_names_groups_and_emails() -> None:
    text = "name,groups,email\n# a comment\n\nivy,students;staff,ivy@example.org\njon, students\n"
    people, where = parse_csv(text, "p.csv")
    assert people == [
        Person("ivy", ["students", "staff"], "ivy@example.org"),
        Person("jon", ["students"], None),
    ]
    assert where == ["p.csv:4", "p.csv:5"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "no people in it"),
        ("name,groups,email\n", "no people in it"),
        ("ivy,students,a@b.org,extra\n", "p.csv:1: 4 columns"),
    ],
)
def test_a_csv_without_people_or_with_extra_columns_is_refused(text: str, expected: str) -> None:
    with pytest.raises(PeopleError, match=expected):
        parse_csv(text, "p.csv")


def test_every_problem_is_reported_and_groups_need_the_hub(
    ctx: Context, records: SQLRecords
) -> None:
    accounts.set_password(records, "alice")
    people = [
        Person("alice"),
        Person("Bad"),
        Person("ivy", ["studnets"]),
        Person("ivy"),
        Person("jon", [], "nope"),
    ]
    with pytest.raises(PeopleError) as info:
        check_people(ctx, people, ["f:1", "f:2", "f:3", "f:4", "f:5"])
    lines = str(info.value).splitlines()
    assert lines[0].startswith("f:1: alice already has a login")
    assert lines[1].startswith("f:2: 'Bad' is not a valid user name")
    assert lines[2] == (
        "f:3: ivy: there is no group 'studnets' in the configuration. Did you mean 'students'? "
        "Groups: staff, students."
    )
    assert lines[3] == "f:4: ivy is listed twice."
    assert lines[4] == "f:5: jon: 'nope' is not an e-mail address."
    assert "the hub, which is not running" in lines[5]
    assert len(lines) == 6
