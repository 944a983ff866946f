"""Which operating-system account PostgreSQL runs as, and how files and commands are given to it.

PostgreSQL refuses to run as root. When the agent runs as root (as CI and many installs do), every PostgreSQL
command (initdb, pg_ctl, pg_basebackup, pg_rewind, pg_controldata) runs as an unprivileged account (``postgres``
by default, or ``$PGHA_PG_USER``) and every file PostgreSQL reads is owned by it. Otherwise everything runs as
the invoking user and nothing changes hands.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass


class AccountError(Exception):
    pass


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str

    @property
    def switching(self) -> bool:
        """True when commands must switch to this account (we are root and it is not)."""
        return os.geteuid() == 0 and self.uid != 0

    def subprocess_kwargs(self) -> dict:
        if not self.switching:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def env(self, extra: dict | None = None) -> dict:
        env = dict(os.environ)
        if self.switching:
            env.update({"HOME": self.home, "USER": self.name, "LOGNAME": self.name})
        env.update(extra or {})
        return env

    def chown(self, path: str) -> None:
        if self.switching:
            os.chown(path, self.uid, self.gid)


def postgres_account() -> Account:
    """The account PostgreSQL runs as: ``$PGHA_PG_USER`` or ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
    name = os.environ.get("PGHA_PG_USER", "postgres")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise AccountError(
            f"running as root, PostgreSQL needs an unprivileged account and '{name}' does not exist: "
            "install PostgreSQL's packages (apt-get install postgresql-15) or set PGHA_PG_USER") from None
    if entry.pw_uid == 0:
        raise AccountError(f"PGHA_PG_USER={name} is root; PostgreSQL refuses to run as root")
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
