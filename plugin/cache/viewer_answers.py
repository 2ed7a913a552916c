"""A viewer's behavioral answer in Redis, small enough to stay inside the viewer's hash.

Viewers overwhelmingly share a few hundred cohort sets, so the cohorts and activations (a
*profile*, 150 bytes and more) are stored once per distinct set, under their digest
(`{prefix}:p:<hex>`, as any other stored answer), and the viewer's hash holds only a
reference: the profile's 16-byte digest, when the answer was stored (4 bytes, whole seconds)
and the Permutive user id (16 bytes for a UUID). Redis keeps a hash whose values are all under
64 bytes as one compact listpack; one larger value makes it a hash table, several times larger.
"""

from __future__ import annotations

import hashlib
import struct

_STAMP = struct.Struct(">I")
_DIGEST = 16
_REF_HEAD = _DIGEST + _STAMP.size
MAX_USER_BYTES = 256


def digest(profile: bytes) -> bytes:
    """The profile's name: a digest of its stored bytes."""
    return hashlib.blake2b(profile, digest_size=_DIGEST).digest()


def reference(profile_digest: bytes, stored_at: float, user: bytes) -> bytes:
    """What the viewer's hash holds: the profile's digest, the time, the packed user id."""
    return profile_digest + _STAMP.pack(int(stored_at)) + user


def parse_reference(raw: object) -> tuple[bytes, float, bytes] | None:
    """(digest, stored at, packed user id), or None when `raw` is not a reference."""
    if not isinstance(raw, bytes) or not _REF_HEAD <= len(raw) <= _REF_HEAD + MAX_USER_BYTES:
        return None
    return raw[:_DIGEST], float(_STAMP.unpack_from(raw, _DIGEST)[0]), raw[_REF_HEAD:]


def user_problem(user: bytes) -> str | None:
    """Why a packed user id cannot be used (a `reason` label), or None."""
    if len(user) == 16 or not user:
        return None
    try:
        text = user.decode()
    except UnicodeDecodeError:
        return "bad_user_id"
    return None if text.isprintable() and " " not in text else "bad_user_id"
