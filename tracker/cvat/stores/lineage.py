"""Which history a stored version belongs to, so that a replica's copy of an object is trusted
only when it is a copy of that object's history, not merely of a version with the same number.

A version number alone does not name one state: after a Redis failover or a restore that loses
version 5, another request can commit a different version 5 (another frame, another tab), and a
replica holding a copy of the lost one would reuse its fields and answer its last shape. Each
committed version therefore gets a head: a hash of the previous head, the version and the digest
of the frame its step read. The object's header keeps the newest `KEPT` heads, newest first; a
copy taken at version c with head h is of this history exactly when the header lists h at c.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

KEPT = 8  # a copy up to this many steps behind is still used; older ones are read whole


def extended(heads: Sequence[str], version: int, digest: str) -> list[str]:
    """The heads after committing `version`, whose step read the frame named by `digest`, on top
    of `heads` (the previous version's, newest first; empty for a new object)."""
    previous = heads[0] if heads else ""
    head = hashlib.blake2b(f"{previous}:{version}:{digest}".encode(), digest_size=12).hexdigest()
    return [head, *heads][:KEPT]


def steps_behind(
    heads: Sequence[str], version: int, copy_version: int, copy_head: str
) -> int | None:
    """How many steps a copy (`copy_version`, `copy_head`) is behind the stored `version` whose
    heads are `heads`: 0 when it is that very state, None when it is of another history (or too
    old to tell), and so must not be used."""
    behind = version - copy_version
    if 0 <= behind < len(heads) and heads[behind] == copy_head:
        return behind
    return None
