"""Who acts on a state, as the state's backend knows it (SPEC §8, §11).

On a state directory the identity is the OS user of the process, from the user database
(``pwd`` by the real uid): never ``$USER`` or ``$LOGNAME`` (anyone can set those), never
``getpass`` (which reads them first), never ``--by`` (recorded beside it as ``on_behalf_of``).
The run's starter, the lock's holder, every approval and every decision use this one function,
so that ``allow_self: false`` compares like with like.

On a PostgreSQL state the identity is the database's ``session_user`` (``identity``): the role
each operator connects as, which the database authenticates.

``self_approval_default`` is the backend's default for ``allow_self``: true on a directory (one
machine, one OS user: a lone operator is not locked out of their own gates); false on
PostgreSQL (a team's state: each operator has a role, and the starter's own approval does not
count unless the step says ``allow_self: true``).
"""

from __future__ import annotations

import os
import pwd


def os_user() -> str:
    """The OS user of this process (its real uid), by name; ``uid N`` for a uid with no entry
    in the user database."""
    uid = os.getuid()
    try:
        return str(pwd.getpwuid(uid).pw_name)
    except (KeyError, OSError):
        return f"uid {uid}"


def identity(state: str | os.PathLike[str]) -> str:
    """Who acts on ``state``: ``session_user`` on PostgreSQL (one connection), the OS user on
    a directory."""
    from .location import is_postgres

    if is_postgres(state):
        from . import pg

        return pg.session_user(str(state))
    return os_user()


def os_uid(state: str | os.PathLike[str]) -> int | None:
    """The uid compared beside the name on a directory (one uid is one identity, its name
    resolved or not); None on PostgreSQL, where the role is the identity (two roles may share
    one OS user)."""
    from .location import is_postgres

    return None if is_postgres(state) else os.getuid()


def self_approval_default(state: str | os.PathLike[str]) -> bool:
    """``allow_self`` when a step does not say (SPEC §11): true on a state directory, false on
    PostgreSQL."""
    from .location import is_postgres

    return not is_postgres(state)
