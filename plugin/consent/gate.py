"""The consent gate: may this ad request's user data go to the CCS API?

The most restrictive signal wins. The ad request's own signals (parsed by its adapter) and the
host's (a library `Context`, the CLI `--consent`, the sidecar's `cohortkv_consent` parameter or
`X-Cohortkv-Consent` header) are read together, and:

1. A child-directed / COPPA flag denies, whatever else is said and however `cfg.default` is set.
2. Conflicting duplicates of one consent parameter (`gdpr=0&gdpr=1`) deny: we cannot know which
   one the user's CMP wrote.
3. A platform flag that restricts data use (GAM `rdp`, `npa`, `ltd`) denies.
4. An override (`override=False`) may always deny.
5. Each raw signal gives a verdict: grant, deny, unknown (missing or undecodable) or neutral
   (its regime does not apply). Any deny ⇒ denied; else any unknown ⇒ `cfg.default`; else
   `gdpr` explicitly False or any grant ⇒ granted; else `cfg.default`.
6. Only where NO raw signal was sent at all may `override=True` grant (`override_granted`);
   otherwise the signals decide, and an override can never upgrade them.

Signals (the first verdict of a kind, in this order, gives the reason):

- TCF v2 TC string (`tc_string`), read when GDPR may apply (`gdpr` is not False, or `gpp_sid`
  includes 2). When GDPR applies, a TC string is required, from `tc_string` or the GPP
  tcfeuv2 section; it must consent to every purpose in `cfg.purposes` and to vendor
  `cfg.vendor_id` (`cfg.tcf_basis = "publisher"`: every purpose in the publisher TC segment
  instead, no vendor consent), and no publisher restriction may stand in the way:
  type 0 (not allowed),
  type 2 (legitimate interest only: we process on consent alone, and Purpose 1 can never rest
  on legitimate interest) and the undefined type 3 deny; type 1 needs the purpose's consent.
- GPP (`gpp`, `gpp_sid`): the sections listed in `gpp_sid`. Without `gpp_sid`, every section
  in the string (but tcfeuv2 when `gdpr` is False); none when it holds only ids <= 0, as `-1`
  means "none applies".
  tcfeuv2 (2) is decided like a TC string, tcfcav1 (5) by express or implied consent for the
  configured purposes and vendor (`TcfCa.consent`), uspv1 (6) like `us_privacy`; usnat (7) and
  the US state sections (8-27) deny on a known child without consent, an opt-out of sale,
  sharing or targeted advertising, GPC, MSPA service provider mode or a notice not given
  (`UsSection.denial`). Other section ids are ignored, but if no listed section can be read at
  all the GPP verdict is unknown. A listed tcfeuv2 or uspv1 section missing from the string is
  excused when `tc_string` / `us_privacy` carries it.
- US Privacy (`us_privacy`): `1?Y?` opted out of sale ⇒ deny, `1?N?` ⇒ grant, `1?-?` ⇒ neutral.

Reasons form the fixed vocabulary `REASONS` (a Prometheus label: keep it small and stable).
Reasons ending in `_undecodable` mean a machine sent a string we could not read.
"""

from __future__ import annotations

import logging
from typing import Literal, NamedTuple

from plugin.config import ConsentConfig
from plugin.consent.gpp import (
    SECTION_TCFCAV1,
    SECTION_TCFEUV2,
    SECTION_USPV1,
    GppDecodeError,
    decode_gpp,
)
from plugin.consent.gpp_us import US_SECTIONS, decode_us_section
from plugin.consent.tcf import TcfDecodeError, decode_publisher_tc, decode_tc_string
from plugin.consent.tcfca import decode_tcfca
from plugin.consent.usp import UspDecodeError, decode_us_privacy
from plugin.context import ConsentSignals
from plugin.result import ConsentDecision

__all__ = [
    "REASONS",
    "UNDECODABLE_REASONS",
    "carries_signal",
    "decide",
    "is_undecodable",
]

log = logging.getLogger(__name__)

RESTRICTION_REQUIRE_CONSENT = 1
"""TCF publisher restriction type 1: the purpose needs consent, which we require anyway."""

REASONS: tuple[str, ...] = (
    # Denials that nothing can lift.
    "child_directed",
    "conflicting_signals",
    "restricted_processing",
    # The host (or a caller) said so: it may always deny, and grant only without signals.
    "override_granted",
    "override_denied",
    # Nothing decisive was sent.
    "gdpr_not_applicable",
    "no_signal",
    # TCF v2 TC string (`gdpr_consent`).
    "tcf_granted",
    "tcf_purpose_denied",
    "tcf_vendor_denied",
    "tcf_restricted",
    "tcf_publisher_missing",
    "tcf_missing",
    "tcf_undecodable",
    # US Privacy string (`us_privacy`).
    "usp_opted_out",
    "usp_not_opted_out",
    "usp_not_applicable",
    "usp_undecodable",
    # GPP string as a whole (`gpp`, `gpp_sid`).
    "gpp_not_applicable",
    "gpp_missing",
    "gpp_section_missing",
    "gpp_unsupported_section",
    "gpp_undecodable",
    # GPP tcfeuv2 section (2).
    "gpp_tcf_granted",
    "gpp_tcf_purpose_denied",
    "gpp_tcf_vendor_denied",
    "gpp_tcf_restricted",
    "gpp_tcf_publisher_missing",
    "gpp_tcf_undecodable",
    # GPP uspv1 section (6).
    "gpp_usp_opted_out",
    "gpp_usp_not_opted_out",
    "gpp_usp_not_applicable",
    "gpp_usp_undecodable",
    # GPP tcfcav1 section (5).
    "gpp_tcfca_granted",
    "gpp_tcfca_purpose_denied",
    "gpp_tcfca_vendor_denied",
    "gpp_tcfca_restricted",
    "gpp_tcfca_undecodable",
    # Any GPP US section (usnat 7, the states 8-27).
    "gpp_gpc",
    "gpp_mspa_service_provider_mode",
    # Each GPP US section by name, usnat first: gpp_usnat_opted_out, ...
    *(
        f"gpp_{layout.name}_{kind}"
        for layout in US_SECTIONS.values()
        for kind in ("opted_out", "not_opted_out", "no_notice", "known_child", "undecodable")
        if kind != "known_child" or layout.has_known_child
    ),
    # A bug of ours, never a property of the input: fail closed.
    "internal_error",
)
"""Every reason `decide` can return."""

_SUPPORTED_SECTIONS = frozenset({SECTION_TCFEUV2, SECTION_TCFCAV1, SECTION_USPV1, *US_SECTIONS})

UNDECODABLE_REASONS: frozenset[str] = frozenset(r for r in REASONS if r.endswith("_undecodable"))


def is_undecodable(reason: str) -> bool:
    """Whether the decision came from a consent string a machine sent and we could not read."""
    return reason in UNDECODABLE_REASONS


Outcome = Literal["grant", "deny", "unknown", "neutral"]


class _Verdict(NamedTuple):
    outcome: Outcome
    reason: str


def decide(
    signals: ConsentSignals, cfg: ConsentConfig, host: ConsentSignals | None = None
) -> ConsentDecision:
    """The consent decision for one ad request: its own `signals`, with the `host`'s read
    together with them (never instead of them). Pure, and never raises."""
    try:
        return _decide(signals, host, cfg)
    except Exception:  # a bug here must not fail the ad request; deny the user data
        log.exception("consent decision failed")
        return ConsentDecision(allowed=False, reason="internal_error")


def _decide(
    signals: ConsentSignals, host: ConsentSignals | None, cfg: ConsentConfig
) -> ConsentDecision:
    sources = (signals,) if host is None else (signals, host)
    if any(s.child_directed is True for s in sources):
        return ConsentDecision(False, "child_directed")
    if any(s.conflicts for s in sources):
        return ConsentDecision(False, "conflicting_signals")
    if any(s.restricted is True for s in sources):
        return ConsentDecision(False, "restricted_processing")
    if any(s.override is False for s in sources):
        return ConsentDecision(False, "override_denied")
    verdicts: list[_Verdict] = []
    carried = False
    for source in sources:
        if carries_signal(source):
            carried = True
            verdicts.extend(_verdicts(source, cfg))
    if not carried:
        if any(s.override is True for s in sources):
            return ConsentDecision(True, "override_granted")
        return ConsentDecision(cfg.default == "granted", "no_signal")
    return _combine(verdicts, cfg)


def carries_signal(signals: ConsentSignals) -> bool:
    """Whether any raw consent signal (gdpr, TC string, US Privacy, GPP) was sent at all."""
    return (
        signals.gdpr is not None
        or _text(signals.tc_string) is not None
        or _text(signals.us_privacy) is not None
        or _text(signals.gpp) is not None
        or signals.gpp_sid is not None
    )


def _verdicts(signals: ConsentSignals, cfg: ConsentConfig) -> list[_Verdict]:
    """Every verdict one source's raw signals give; `gdpr=false` counts as a grant."""
    sid = _applicable_sids(signals.gpp_sid)
    tc = _text(signals.tc_string)
    usp = _text(signals.us_privacy)
    gdpr_applies = signals.gdpr is True or (sid is not None and SECTION_TCFEUV2 in sid)

    gpp_verdicts, gpp_read_tcf = _gpp_verdicts(signals, sid, cfg, has_tc=tc is not None)
    verdicts: list[_Verdict] = []
    if signals.gdpr is False and not gdpr_applies:
        verdicts.append(_Verdict("grant", "gdpr_not_applicable"))
    if tc is not None and (signals.gdpr is not False or gdpr_applies):
        verdicts.append(_tcf_verdict(tc, cfg, prefix="tcf"))
    verdicts.extend(gpp_verdicts)
    if usp is not None:
        verdicts.append(_usp_verdict(usp, prefix="usp"))
    if gdpr_applies and tc is None and not gpp_read_tcf:
        verdicts.append(_Verdict("unknown", "tcf_missing"))
    return verdicts


def _first(verdicts: list[_Verdict], outcome: Outcome) -> str | None:
    return next((v.reason for v in verdicts if v.outcome == outcome), None)


def _combine(verdicts: list[_Verdict], cfg: ConsentConfig) -> ConsentDecision:
    default = cfg.default == "granted"
    if (reason := _first(verdicts, "deny")) is not None:
        return ConsentDecision(False, reason)
    if (reason := _first(verdicts, "unknown")) is not None:
        return ConsentDecision(default, reason)
    if (reason := _first(verdicts, "grant")) is not None:
        return ConsentDecision(True, reason)
    return ConsentDecision(default, _first(verdicts, "neutral") or "no_signal")


def _text(value: object) -> str | None:
    """A signal's text, or None when absent or blank (hosts send `gdpr_consent=` empty)."""
    if isinstance(value, str) and value.strip():
        return value
    return None


def _applicable_sids(raw: object) -> tuple[int, ...] | None:
    """`gpp_sid` as positive ids in order (ids <= 0 mean "none applies"); None if absent."""
    if raw is None:
        return None
    if not isinstance(raw, tuple | list):
        return ()
    seen: dict[int, None] = {}
    for value in raw:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            seen[value] = None
    return tuple(seen)


def _tcf_verdict(text: str, cfg: ConsentConfig, prefix: str) -> _Verdict:
    """`tcf_basis = "vendor"`: the core segment's purposes and the vendor's consent.
    `"publisher"`: the publisher TC segment's purposes, no vendor consent (none there:
    denied). A publisher restriction against the vendor denies under either basis."""
    try:
        tc = decode_tc_string(text)
        publisher = decode_publisher_tc(text) if cfg.tcf_basis == "publisher" else None
    except TcfDecodeError:
        return _Verdict("unknown", f"{prefix}_undecodable")
    for purpose in cfg.purposes:
        restriction = tc.restriction_type(purpose, cfg.vendor_id)
        if restriction is not None and restriction != RESTRICTION_REQUIRE_CONSENT:
            return _Verdict("deny", f"{prefix}_restricted")
    if cfg.tcf_basis == "publisher":
        if publisher is None:
            return _Verdict("deny", f"{prefix}_publisher_missing")
        consented = publisher.purposes_consent
    else:
        consented = tc.purposes_consent
    if not all(p in consented for p in cfg.purposes):
        return _Verdict("deny", f"{prefix}_purpose_denied")
    if cfg.tcf_basis == "vendor" and not tc.vendor_consent(cfg.vendor_id):
        return _Verdict("deny", f"{prefix}_vendor_denied")
    return _Verdict("grant", f"{prefix}_granted")


def _usp_verdict(text: str, prefix: str) -> _Verdict:
    try:
        usp = decode_us_privacy(text)
    except UspDecodeError:
        return _Verdict("unknown", f"{prefix}_undecodable")
    if not usp.applies:
        return _Verdict("neutral", f"{prefix}_not_applicable")
    if usp.opted_out:
        return _Verdict("deny", f"{prefix}_opted_out")
    return _Verdict("grant", f"{prefix}_not_opted_out")


_SHARED_DENIALS = {"gpc": "gpp_gpc", "service_provider_mode": "gpp_mspa_service_provider_mode"}


def _us_verdict(section_id: int, text: str) -> _Verdict:
    name = US_SECTIONS[section_id].name
    try:
        denial = decode_us_section(section_id, text).denial()
    except GppDecodeError:
        return _Verdict("unknown", f"gpp_{name}_undecodable")
    if denial is None:
        return _Verdict("grant", f"gpp_{name}_not_opted_out")
    return _Verdict("deny", _SHARED_DENIALS.get(denial) or f"gpp_{name}_{denial}")


def _tcfca_verdict(text: str, cfg: ConsentConfig) -> _Verdict:
    try:
        outcome = decode_tcfca(text).consent(cfg.purposes, cfg.vendor_id)
    except GppDecodeError:
        return _Verdict("unknown", "gpp_tcfca_undecodable")
    return _Verdict("grant" if outcome == "granted" else "deny", f"gpp_tcfca_{outcome}")


def _gpp_verdicts(
    signals: ConsentSignals, sid: tuple[int, ...] | None, cfg: ConsentConfig, has_tc: bool
) -> tuple[list[_Verdict], bool]:
    """Verdicts of the applicable GPP sections, and whether a tcfeuv2 section was read."""
    has_usp = _text(signals.us_privacy) is not None

    def excused(section_id: int) -> bool:
        return (section_id == SECTION_TCFEUV2 and has_tc) or (
            section_id == SECTION_USPV1 and has_usp
        )

    text = _text(signals.gpp)
    if sid is not None and not sid:
        return ([_Verdict("neutral", "gpp_not_applicable")], False)
    if text is None:
        if sid is None or all(excused(s) for s in sid):
            return ([], False)
        return ([_Verdict("unknown", "gpp_missing")], False)
    try:
        gpp = decode_gpp(text)
    except GppDecodeError:
        return ([_Verdict("unknown", "gpp_undecodable")], False)

    if sid is None:
        # No list of applicable sections: every section present applies, except tcfeuv2 when
        # the host said GDPR does not apply.
        excluded = SECTION_TCFEUV2 if signals.gdpr is False else None
        applicable = tuple(s for s in gpp.section_ids if s != excluded)
        if not applicable:
            return ([_Verdict("neutral", "gpp_not_applicable")], False)
    else:
        applicable = sid
    verdicts: list[_Verdict] = []
    read_tcf = False
    supported = False
    for section_id in applicable:
        if section_id not in _SUPPORTED_SECTIONS:
            continue
        supported = True
        section = gpp.section(section_id)
        if section is None:
            if not excused(section_id):
                verdicts.append(_Verdict("unknown", "gpp_section_missing"))
        elif section_id == SECTION_TCFEUV2:
            read_tcf = True
            verdicts.append(_tcf_verdict(section, cfg, prefix="gpp_tcf"))
        elif section_id == SECTION_USPV1:
            verdicts.append(_usp_verdict(section, prefix="gpp_usp"))
        elif section_id == SECTION_TCFCAV1:
            verdicts.append(_tcfca_verdict(section, cfg))
        else:
            verdicts.append(_us_verdict(section_id, section))
    if not supported:
        verdicts.append(_Verdict("unknown", "gpp_unsupported_section"))
    return verdicts, read_tcf


class RememberedDecisions:
    """`decide`, remembered by the signals it was made from: it is pure, and one user's signals
    come back with every ad break (a TC string is worth decoding once, not per request). The
    memory is bounded: full, it starts over."""

    MAX = 4096

    def __init__(self, cfg: ConsentConfig) -> None:
        self._cfg = cfg
        self._known: dict[tuple[ConsentSignals, ConsentSignals | None], ConsentDecision] = {}

    def __call__(
        self, signals: ConsentSignals, host: ConsentSignals | None = None
    ) -> ConsentDecision:
        key = (signals, host)
        try:
            known = self._known.get(key)
        except TypeError:  # a signal of an unhashable type: decided, not remembered
            return decide(signals, self._cfg, host)
        if known is None:
            known = decide(signals, self._cfg, host)
            if len(self._known) >= self.MAX:
                self._known.clear()
            self._known[key] = known
        return known
