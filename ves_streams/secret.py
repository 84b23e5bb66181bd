"""One way to hold a secret (collector password, Kafka SASL password).

A :class:`Secret` never shows its value in ``repr``, ``str``, f-strings or
pickles, so passing settings to a logger, an exception or a dataclass
``repr`` cannot leak it. The value comes out only through :meth:`reveal`, at
the one place that sends it (an ``Authorization`` header, a SASL handshake).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Secret", "MASK"]

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
