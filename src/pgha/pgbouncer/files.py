"""Reading and replacing the operator's pgbouncer.ini: bytes in, bytes out, the file's mode and owner kept.

The text is decoded as UTF-8 with ``surrogateescape``, so any byte the file holds (another encoding, stray
bytes) comes back out unchanged. The new file is written next to the old one, fsynced, given the old one's mode
and owner, and renamed over it: PgBouncer (or a crash) sees the old file or the new one, never half of one. A
symlinked path is followed, so the link stays a link and its target is what changes.
"""

from __future__ import annotations

import os
import tempfile


def read_ini(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "surrogateescape")


def replace_ini(path: str, text: str) -> None:
    real = os.path.realpath(path)
    st = os.stat(real)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(real), prefix=".pgha-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8", "surrogateescape"))
            f.flush()
            os.fchmod(f.fileno(), st.st_mode & 0o7777)
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(f.fileno(), st.st_uid, st.st_gid)
                except PermissionError:
                    raise PermissionError(f"cannot give the new {real} its owner {st.st_uid}:{st.st_gid}: "
                                          "run `pgha pgbouncer` as root or as the file's owner") from None
            os.fsync(f.fileno())
        os.replace(tmp, real)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
