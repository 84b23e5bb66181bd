"""One way to hold a secret (collector password, Kafka SASL password).

A :class:`Secret` never shows its value in ``repr``, ``str``, f-strings or
pickles, so passing settings to a logger, an exception or a dataclass
``repr`` cannot leak it. The value comes out only through :meth:`reveal`, at
the one place that sends it (an ``Authorization`` header, a SASL handshake).
:func:`scrub` masks secrets inside a text that may hold them (an error
message from a client library, a URL with userinfo).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["Secret", "MASK", "scrub", "scrub_url"]

#: What a secret looks like wherever it is printed.
MASK = "********"


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or formatting."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for the one place that needs it (auth headers, SASL)."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        # Pickling would be the one way to see the value in a dump; refuse it.
        raise TypeError("Secret values cannot be pickled")

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self


# -- scrubbing text (error messages, log lines) -------------------------------------

#: What a secret found inside a text (a URL's userinfo, a known secret string) becomes.
_SCRUBBED = "***"
# ://userinfo@ -- userinfo runs from "://" to an '@' before any '/', '?', '#'
# or whitespace. Anchored on the "://" (a fixed-width lookbehind) so scrubbing
# stays linear on long text.
_USERINFO = re.compile(r"(?<=://)[^/?#\s@]+@")


def scrub_url(text: str) -> str:
    """Replace the userinfo of every URL in ``text`` with ``***``."""
    return _USERINFO.sub(f"{_SCRUBBED}@", text)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with URL userinfo and every non-empty secret masked.

    Longer secrets are replaced first so that a secret containing another one
    is masked whole.
    """
    out = scrub_url(text)
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        out = out.replace(secret, _SCRUBBED)
    return out
