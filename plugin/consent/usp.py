"""IAB US Privacy string (`us_privacy`, also GPP section 6 `uspv1`): four characters, `1YNN`."""

from __future__ import annotations

from typing import Literal

import msgspec

Flag = Literal["Y", "N", "-"]
_FLAGS: dict[str, Flag] = {"Y": "Y", "N": "N", "-": "-"}


class UspDecodeError(ValueError):
    """The text is not a version 1 US Privacy string."""


class UsPrivacy(msgspec.Struct, frozen=True):
    """`-` means "not applicable" for each flag."""

    version: int
    notice: Flag
    """Explicit notice / opportunity to opt out was given."""
    opt_out_sale: Flag
    """The user opted out of the sale of their personal information."""
    lspa_covered: Flag

    @property
    def applies(self) -> bool:
        return self.opt_out_sale != "-"

    @property
    def opted_out(self) -> bool:
        return self.opt_out_sale == "Y"


def decode_us_privacy(text: str) -> UsPrivacy:
    """Parse `1YNN`-style strings; lower-case flags are accepted (some senders use them)."""
    if not isinstance(text, str):
        raise UspDecodeError("not a string")
    value = text.strip().upper()
    if len(value) != 4 or value[0] != "1":
        raise UspDecodeError("expected '1' and three of Y, N, -")
    try:
        notice, opt_out, lspa = (_FLAGS[c] for c in value[1:])
    except KeyError:
        raise UspDecodeError("expected '1' and three of Y, N, -") from None
    return UsPrivacy(version=1, notice=notice, opt_out_sale=opt_out, lspa_covered=lspa)
