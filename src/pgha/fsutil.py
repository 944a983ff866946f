"""Files written whole or not at all.

Every file pgha writes (postgresql.conf, pg_hba.conf, the pgpass file, generated configs) goes through
``write_atomic``: a temporary file in the same directory, fsync, chmod/chown, then rename. A crash leaves the old
file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable


def write_atomic(path: str, content: str, mode: int = 0o644, chown: Callable[[str], None] | None = None) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".pgha-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if chown is not None:
            chown(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None
