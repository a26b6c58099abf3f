"""Roles: who may change whose runs (labrun.jupyter_ext.roles), from c.LabRun.roles,
c.LabRun.admins and JupyterHub groups."""

from __future__ import annotations

import pytest

from labrun.jupyter_ext.roles import (
    RolesConfig,
    may_change,
    parse_config,
    refusal,
    roles_of,
)

CONFIG = parse_config({"admin": ["dora"], "lead": {"carol": ["surgical-video", "ct"]}})


@pytest.mark.parametrize(
    ("user", "admins", "groups", "names", "leads"),
    [
        ("alice", [], [], ["researcher"], set()),
        ("carol", [], [], ["lead", "researcher"], {"surgical-video", "ct"}),
        ("dora", [], [], ["admin", "researcher"], set()),
        # c.LabRun.admins means admin
        ("bob", ["bob"], [], ["admin", "researcher"], set()),
        # JupyterHub groups: labrun-admin, labrun-lead:<project>; others mean nothing
        ("erin", [], ["labrun-admin", "staff"], ["admin", "researcher"], set()),
        ("fred", [], ["labrun-lead:mri", "labrun-lead:"], ["lead", "researcher"], {"mri"}),
        # both sources add up
        ("carol", [], ["labrun-lead:mri"], ["lead", "researcher"], {"surgical-video", "ct", "mri"}),
    ],
)
def test_roles_come_from_config_admins_and_groups(
    user: str, admins: list[str], groups: list[str], names: list[str], leads: set[str]
) -> None:
    roles = roles_of(user, config=CONFIG, admins=admins, groups=groups)
    assert roles.names == names
    assert roles.leads == leads
    assert roles.admin == ("admin" in names)


@pytest.mark.parametrize(
    ("user", "owner", "project", "allowed"),
    [
        ("alice", "alice", "surgical-video", True),  # a researcher: their own runs
        ("bob", "alice", "surgical-video", False),  # not another's
        ("carol", "alice", "surgical-video", True),  # a lead: the runs of their projects
        ("carol", "alice", "mri", False),  # not of another project
        ("dora", "alice", "mri", True),  # an admin: every run
    ],
)
def test_who_may_change_a_run(user: str, owner: str, project: str, allowed: bool) -> None:
    roles = roles_of(user, config=CONFIG)
    assert may_change(roles, owner=owner, project=project) is allowed


def test_a_refusal_says_who_may_and_how_to_become_one() -> None:
    bob = roles_of("bob", config=CONFIG)
    message = refusal(bob, run_id=7, owner="alice", project="mri", hub=True)
    assert message.startswith("run 7 belongs to 'alice' (project 'mri'); only they, a lead of")
    assert "you are bob (researcher)" in message
    assert '{"lead": {"bob": ["mri"]}}' in message
    assert "JupyterHub group 'labrun-lead:mri'" in message and "'labrun-admin'" in message
    # Without JupyterHub, no groups are named
    assert "JupyterHub" not in refusal(bob, run_id=7, owner="alice", project="mri", hub=False)
    carol = roles_of("carol", config=CONFIG)
    assert "you are carol (lead of 'ct', 'surgical-video', researcher)" in refusal(
        carol, run_id=7, owner="alice", project="mri", hub=False
    )


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"researcher": ["alice"]}, "lists no researchers: every user is one"),
        ({"admins": ["dora"]}, "admins: Extra inputs are not permitted"),
        ({"admin": "dora"}, "admin: Input should be a valid list"),
        ({"lead": ["carol"]}, "lead: Input should be a valid dictionary"),
        ({"lead": {"carol": "mri"}}, "lead.carol: Input should be a valid list"),
        ({"lead": {"carol": ["no/such"]}}, "lead 'carol' has 'no/such', which is no project"),
    ],
)
def test_a_wrong_roles_setting_says_what_is_wrong(value: object, says: str) -> None:
    with pytest.raises(ValueError, match=r"c\.LabRun\.roles") as err:
        parse_config(value)
    assert says in str(err.value)
    assert '{"admin": ["dora"], "lead": {"carol": ["surgical-video"]}}' in str(err.value)


def test_no_roles_set_makes_everyone_a_researcher() -> None:
    assert parse_config({}) == RolesConfig()
    assert roles_of("alice", config=parse_config({})).names == ["researcher"]
