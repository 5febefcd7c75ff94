"""The one exception type that means "the user asked for something we cannot do", and the one place that turns the
other failures a user causes (a refused write, a path that cannot be used) into one line naming the cause."""

from __future__ import annotations

import errno

#: errno values of a write the disk refused: full, over quota, over the file size limit, read-only
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
#: SQLite's primary result codes for the same: SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL (an extended code such as
#: SQLITE_IOERR_WRITE, what a write over the file size limit gives, carries its primary code in its low byte)
SQLITE_DISK_CODES = {8, 10, 13}
ADVICE = "free some space (or make the disk writable) and run the same command again: what was stored is kept"
#: errno values of a path the user gave that cannot be used as it is: permissions, a file for a folder and back
PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP}


class UserError(Exception):
    """A mistake in the user's input: the CLI prints its message on one line and exits with code 2."""


def user_message(error: BaseException) -> str | None:
    """One line for an error the user can fix: a disk that refused a write (full, read-only, failing) or a path that
    cannot be used (permissions, a directory where a file belongs); None for any other (a bug: its traceback shows).

    SQLAlchemy wraps sqlite3's error, and a clean-up write that fails too raises on top of the first one: so the
    whole chain of causes is searched.
    """
    seen: list[BaseException] = []
    link: BaseException | None = error
    while link is not None and link not in seen:
        seen.append(link)
        code = getattr(link, "sqlite_errorcode", None)  # sqlite3 errors carry it since Python 3.11
        if code is not None and code & 0xFF in SQLITE_DISK_CODES:
            return f"cannot write the store: {link} ({link.sqlite_errorname}); {ADVICE}"
        if isinstance(link, OSError) and link.errno in DISK_ERRNOS:
            return f"cannot write {link.filename or 'to the disk'}: {link.strerror}; {ADVICE}"
        if isinstance(link, OSError) and link.errno in PATH_ERRNOS and link.filename:
            return f"cannot use {link.filename}: {link.strerror}"
        link = link.__cause__ or link.__context__
    return None
