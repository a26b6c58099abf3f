"""Roles: who may change whose runs. Every user reads every run; changing one is for

- a **researcher** (everyone): their own runs;
- a **lead** of a project: the runs of that project, whoever made them;
- an **admin**: every run, and everyone's tokens.

A user holds each role that either source gives:

- ``c.LabRun.roles``, e.g. ``{"admin": ["dora"], "lead": {"carol": ["surgical-video"]}}``
  (``c.LabRun.admins`` lists admins too);
- under JupyterHub, the user's hub groups: ``labrun-admin`` makes admins, and
  ``labrun-lead:<project>`` leads of that project.

This module is pure: the request handlers find the user's groups (see
:meth:`labrun.jupyter_ext.handlers.identity.CallerHandler.roles`), and
:class:`labrun.jupyter_ext.access.RunAccess` applies :func:`may_change`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labrun.models import NAME_PATTERN, RoleName

ADMIN_GROUP = "labrun-admin"
LEAD_GROUP_PREFIX = "labrun-lead:"


class RolesConfig(BaseModel):
    """The shape of ``c.LabRun.roles``."""

    model_config = ConfigDict(extra="forbid")

    admin: list[str] = Field(default_factory=list, description="users who are admins")
    lead: dict[str, list[str]] = Field(
        default_factory=dict, description="each lead's projects: {user: [project, ...]}"
    )


def parse_config(value: Any) -> RolesConfig:
    """``c.LabRun.roles`` checked, or ValueError saying what is wrong and the shape it takes."""
    shape = '{"admin": ["dora"], "lead": {"carol": ["surgical-video"]}}'
    if isinstance(value, dict) and "researcher" in value:
        raise ValueError(
            "c.LabRun.roles lists no researchers: every user is one; give only 'admin' "
            f"(a list of users) and 'lead' (each lead's projects), e.g. {shape}"
        )
    try:
        config = RolesConfig.model_validate(value)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'roles'}: {e['msg']}" for e in err.errors()
        )
        raise ValueError(
            f"c.LabRun.roles is not valid ({problems}); it looks like {shape}"
        ) from None
    for lead, projects in config.lead.items():
        bad = [p for p in projects if re.fullmatch(NAME_PATTERN, p) is None]
        if bad:
            raise ValueError(
                f"c.LabRun.roles: lead {lead!r} has {bad[0]!r}, which is no project name; "
                f"give each lead a list of project names, e.g. {shape}"
            )
    return config


@dataclass(frozen=True)
class Roles:
    """What one user may do: their roles, and the projects they lead."""

    user: str
    admin: bool = False
    leads: frozenset[str] = field(default_factory=frozenset)

    @property
    def names(self) -> list[RoleName]:
        """The user's roles, the highest first; everyone is a researcher."""
        names: list[RoleName] = ["admin"] if self.admin else []
        if self.leads:
            names.append("lead")
        return [*names, "researcher"]

    def describe(self) -> str:
        """``carol (lead of 'surgical-video', researcher)``."""
        parts = ["admin"] if self.admin else []
        if self.leads:
            parts.append("lead of " + ", ".join(repr(p) for p in sorted(self.leads)))
        return f"{self.user} ({', '.join([*parts, 'researcher'])})"


def roles_of(
    user: str, *, config: RolesConfig, admins: Iterable[str] = (), groups: Iterable[str] = ()
) -> Roles:
    """The roles ``user`` holds by ``config``, the ``admins`` list and their hub ``groups``."""
    groups = set(groups)
    admin = user in admins or user in config.admin or ADMIN_GROUP in groups
    leads = set(config.lead.get(user, ()))
    leads.update(g[len(LEAD_GROUP_PREFIX) :] for g in groups if g.startswith(LEAD_GROUP_PREFIX))
    leads.discard("")
    return Roles(user=user, admin=admin, leads=frozenset(leads))


def may_change(roles: Roles, *, owner: str, project: str) -> bool:
    """Whether the holder of ``roles`` may change a run of ``owner`` in ``project``."""
    return roles.admin or roles.user == owner or project in roles.leads


def refusal(roles: Roles, *, run_id: int, owner: str, project: str, hub: bool) -> str:
    """Why ``roles`` may not change the run, who may, and how to become one of them."""
    lead_group, admin_group = (
        (f" or the JupyterHub group '{LEAD_GROUP_PREFIX}{project}'", f" or '{ADMIN_GROUP}'")
        if hub
        else ("", "")
    )
    return (
        f"run {run_id} belongs to {owner!r} (project {project!r}); only they, a lead of "
        f"{project!r}, an admin or a token scoped to that run may change it, and you are "
        f"{roles.describe()}. A lead is named in c.LabRun.roles "
        f'({{"lead": {{"{roles.user}": ["{project}"]}}}}){lead_group}; an admin in '
        f"c.LabRun.admins, c.LabRun.roles{admin_group}: ask whoever runs this server"
    )
