"""Who the CCS API is asked about: exactly one of `user_id`, `alias` or `aliases`."""

from __future__ import annotations

import hashlib
import re
import uuid

import msgspec

from plugin.errors import IdentityError as IdentityError

DEVICE_ID_TAGS: dict[str, str] = {
    "idfa": "idfa",
    "tvos": "idfa",
    "adid": "aaid",
    "aaid": "aaid",
    "gaid": "aaid",
    "google_advertising_id": "aaid",
    "afai": "afai",
    "fireos": "afai",
    "amazon_advertising_id": "afai",
    "rida": "rida",
    "roku": "rida",
    "roku_rida": "rida",
    "tifa": "tifa",
    "samsung_tifa": "tifa",
    "msai": "msai",
    "vida": "vida",
    "lgudid": "lgudid",
}
"""Device id types as ad platforms name them (GAM `idtype`, FreeWheel `_fw_did` prefixes,
AdsWizz `ifaType`) → the Permutive alias tag they are sent under."""

ADVERTISING_ID_TAGS = frozenset((*DEVICE_ID_TAGS, *DEVICE_ID_TAGS.values(), "device_id", "ifa"))
"""The alias tags of advertising (device) ids, lower-case, as platforms and Permutive name
them: never used when a request limits ad tracking."""


def _all_zeros(ident: str) -> bool:
    """The id a device reports when ad tracking is limited (`00000000-0000-...`)."""
    return not ident.replace("-", "").replace("0", "").strip()


IDENTITY_FORMS: tuple[str, ...] = ("user_id", "alias", "aliases")
ONE_FORM = "exactly one of user_id, alias, aliases"
"""The CCS API's rule for a request's identity: one form, never two or none."""


class Alias(msgspec.Struct, omit_defaults=True, frozen=True):
    tag: str
    id: str
    priority: int | None = None


class Identity(msgspec.Struct, omit_defaults=True, frozen=True):
    """The identity part of a CCS request body; absent forms are omitted, never null."""

    user_id: str | None = None
    alias: Alias | None = None
    aliases: tuple[Alias, ...] | None = None

    def validate(self) -> Identity:
        forms = [f for f in IDENTITY_FORMS if getattr(self, f) is not None]
        if len(forms) != 1:
            raise IdentityError("identity", ONE_FORM, got_text=", ".join(forms) or "none")
        if self.user_id is not None and not is_uuid4(self.user_id):
            raise IdentityError("identity.user_id", "a UUIDv4", self.user_id)
        if self.alias is not None:
            _check_alias(self.alias, "identity.alias")
        if self.aliases is not None:
            if not self.aliases:
                raise IdentityError("identity.aliases", "at least one alias")
            seen: set[int] = set()
            for i, a in enumerate(self.aliases):
                where = f"identity.aliases[{i}]"
                _check_alias(a, where)
                if a.priority is None or a.priority < 0:
                    raise IdentityError(f"{where}.priority", "an integer >= 0")
                if a.priority in seen:
                    raise IdentityError(
                        f"{where}.priority", "a priority no other alias has", a.priority
                    )
                seen.add(a.priority)
        return self

    def usable(self, limit_ad_tracking: bool) -> Identity | None:
        """This identity without what may not be used: all-zero ids always (every tracking-
        limited device reports that one id: they would share a profile), and advertising ids
        (any spelling of their tag) when the request limits ad tracking. None if nothing is
        left."""

        def ok(a: Alias) -> bool:
            if _all_zeros(a.id):
                return False
            return not (limit_ad_tracking and a.tag.strip().lower() in ADVERTISING_ID_TAGS)

        if self.alias is not None:
            return self if ok(self.alias) else None
        if self.aliases is not None:
            kept = tuple(a for a in self.aliases if ok(a))
            if len(kept) != len(self.aliases):
                return Identity(aliases=kept) if kept else None
        return self

    def cache_key(self) -> str:
        """Stable key for the behavioral cache: the winning identifier, as the API resolves it."""
        if self.user_id is not None:
            return f"u:{self.user_id}"
        if self.alias is not None:
            return f"a:{self.alias.tag}:{self.alias.id}"
        assert self.aliases
        best = min(self.aliases, key=lambda a: a.priority if a.priority is not None else 0)
        return f"a:{best.tag}:{best.id}"


def _check_alias(a: Alias, where: str) -> None:
    if not a.tag or not a.tag.strip():
        raise IdentityError(f"{where}.tag", "a non-empty tag")
    if not a.id or not a.id.strip():
        raise IdentityError(f"{where}.id", "a non-empty id")


def is_uuid4(value: str) -> bool:
    try:
        u = uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return False
    return u.version == 4 and str(u) == value.lower()


_UUID_TEXT = re.compile(r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}")


def is_uuid(value: str) -> bool:
    """A UUID in its usual 8-4-4-4-12 hex form, of any version or variant: the Direct API
    guide's own `a2b3c4d5-e6f7-8901-2345-6789abcdef01` is not an RFC 4122 UUIDv4, and a host
    that uses such ids elsewhere must find them unchanged in our events."""
    return isinstance(value, str) and _UUID_TEXT.fullmatch(value) is not None


def generate_permutive_id() -> str:
    """A fresh UUIDv4 for users with no other identifier; persist it, never regenerate it."""
    return str(uuid.uuid4())


def email_sha256(email: str) -> str:
    """The `email_sha256` alias id: SHA-256 of the trimmed, lower-cased address."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def parse_alias_flag(value: str) -> Alias:
    """`TAG:ID[:PRIORITY]` as given on the command line; the id itself may contain colons."""
    parts = value.split(":")
    priority: int | None = None
    if len(parts) >= 3 and parts[-1].isdigit():
        priority = int(parts.pop())
    tag, ident = parts[0], ":".join(parts[1:])
    if not tag or not ident:
        raise IdentityError("--alias", "TAG:ID[:PRIORITY]", value)
    return Alias(tag=tag, id=ident, priority=priority)
