"""Parsing and checking the people `mlrp user add` and `mlrp user import` are given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from config.schema import parse
from hub import accounts
from hub.people import Context, PeopleError, Person, check_people, delete_hub_user, parse_csv
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


# -- offboarding waits for a server that is slow to stop ----------------------------------------
class _SlowStop:
    """A hub whose user's server is still stopping for the next `busy` looks at it."""

    def __init__(self, busy: int) -> None:
        self.busy, self.calls = busy, []

    def __call__(self, method: str, path: str, **kw: object) -> requests.Response:
        self.calls.append(method)
        r = requests.Response()
        if method == "GET":  # time passes between looks
            pending = "stop" if self.busy > 0 else None
            self.busy = max(0, self.busy - 1)
            r.status_code = 200
            r._content = json.dumps({"servers": {"": {"pending": pending}}}).encode()
        elif self.busy > 0:
            r.status_code = 400
            r._content = b'{"message": "frank\'s server is in the process of stopping"}'
        else:
            r.status_code, r._content = 204, b""
        return r


def test_removal_waits_for_a_server_still_stopping() -> None:
    hub = _SlowStop(busy=2)
    r = delete_hub_user(hub, "frank", wait=30, pause=0)  # type: ignore[arg-type]
    assert r.status_code == 204
    assert hub.calls == ["DELETE", "GET", "DELETE", "GET", "DELETE"]


def test_removal_gives_up_after_the_wait() -> None:
    hub = _SlowStop(busy=1000)
    assert delete_hub_user(hub, "frank", wait=0, pause=0).status_code == 400  # type: ignore[arg-type]
    assert hub.calls == ["DELETE"]
