"""What one ad request tells us: who, whether they consented, what they watch, where in a view."""

from __future__ import annotations

from typing import Any

import msgspec

from plugin.identity import Identity


class ConsentSignals(msgspec.Struct, omit_defaults=True, frozen=True):
    """Raw privacy signals from one source; `plugin.consent.gate` turns them into a decision.

    `override` is a decision from the host or a caller (True granted, False denied): it may
    always deny, and grants only where no raw signal (gdpr, TC string, US Privacy, GPP) was
    sent. `child_directed` (COPPA / child-directed treatment) and `restricted` (a platform flag
    restricting data use) deny whatever else is said; so do `conflicts`, the names of consent
    parameters that came twice with different values.
    """

    override: bool | None = None
    gdpr: bool | None = None
    tc_string: str | None = None
    us_privacy: str | None = None
    gpp: str | None = None
    gpp_sid: tuple[int, ...] | None = None
    child_directed: bool | None = None
    restricted: bool | None = None
    conflicts: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return self == ConsentSignals()


class Content(msgspec.Struct, omit_defaults=True, frozen=True):
    """The content being played: its deterministic URL and the play event's properties.
    `client_type` becomes `client.type` when known."""

    url: str | None = None
    properties: dict[str, Any] = {}
    title: str | None = None
    client_type: str | None = None


class ContentIdRule(msgspec.Struct, frozen=True):
    """How a platform's content id stands for content without a URL: the play-event property
    `property` holds the id, and the content's deterministic URL is
    `<platform>://<namespace>/<id>`, the namespace being the value of `namespace_property`
    when the request has one, else `namespace` (`plugin.signals.content_key`)."""

    property: str
    namespace: str
    namespace_property: str | None = None


class Context(msgspec.Struct, omit_defaults=True, frozen=True):
    identity: Identity | None = None
    consent: ConsentSignals = ConsentSignals()
    content: Content = Content()
    session_id: str | None = None
    view_id: str | None = None
    ssai_session_id: str | None = None
    limit_ad_tracking: bool = False
    """The ad request flags limit-ad-tracking (`is_lat=1`, `device.lmt=1`, ...): no advertising
    id is used as identity, whoever supplies it."""

    def overlaid(self, explicit: Context | None) -> Context:
        """This (parsed) context with every field the host set explicitly taking precedence,
        except consent: the request's own signals stay, and the gate reads the host's with
        them (`plugin.consent.gate.decide`), so that nothing can upgrade a denial."""
        if explicit is None:
            return self
        lat = self.limit_ad_tracking or explicit.limit_ad_tracking
        identity = explicit.identity or self.identity
        if identity is not None:
            identity = identity.usable(lat)
        content = Content(
            url=explicit.content.url or self.content.url,
            properties={**self.content.properties, **explicit.content.properties},
            title=explicit.content.title or self.content.title,
            client_type=explicit.content.client_type or self.content.client_type,
        )
        return Context(
            identity=identity,
            consent=self.consent,
            content=content,
            session_id=explicit.session_id or self.session_id,
            view_id=explicit.view_id or self.view_id,
            ssai_session_id=explicit.ssai_session_id or self.ssai_session_id,
            limit_ad_tracking=lat,
        )
