"""The rule engine's errors: one hierarchy, each with a message a user can act on.

Two kinds of failure exist and they are handled differently on purpose:

* :class:`RuleError` is raised while a topology file is loaded and compiled.
  It names the file, line and column, the rule, what is wrong and what to do,
  so ``ves-streams check`` can print it as a compiler would. A topology that
  raises it never starts.
* :class:`RenderError` is *not* an exception: it is the record of one event
  that could not be rendered at run time (a ``!ValueItem`` that matched two
  samples, a severity missing from a ``!MapValue`` table, ...). Rendering
  returns it next to the events that did render, so the streaming layer can
  dead-letter it and carry on; one bad host never stops the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RulesError", "RuleError", "RenderError", "RenderFailure"]


class RulesError(Exception):
    """Base class of every exception the rule engine raises."""


class RuleError(RulesError):
    """A topology file that cannot be loaded or compiled.

    ``str(err)`` reads ``host.yaml:42:7: in rule 'Host Measurements': <what>
    (hint: <what to do>)``; parts that are unknown (no position for an
    unreadable file, no rule for a header problem, no hint) are left out.
    Lines and columns are 1-based.
    """

    def __init__(
        self,
        file: str,
        line: int | None,
        column: int | None,
        rule: str | None,
        message: str,
        hint: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.rule = rule
        self.message = message
        self.hint = hint
        super().__init__(self._text())

    def _text(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: "
        if self.rule is not None:
            text += f"in rule {self.rule!r}: "
        text += self.message
        if self.hint:
            text += f" (hint: {self.hint})"
        return text

    def __str__(self) -> str:
        return self._text()

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.file, self.line, self.column, self.rule, self.message, self.hint))


@dataclass(frozen=True, slots=True)
class RenderError:
    """One event that was skipped at run time, and why.

    ``reason`` starts with the position of the rule element that failed
    (``host.yaml:57:19: ...``) and ends with a hint, so the dead-letter record
    alone tells an operator which line of which file to change.
    """

    rule: str
    host: str
    reason: str


class RenderFailure(RulesError):
    """Raised inside the renderer when one event cannot be produced.

    Never escapes the public API: the topology turns it into a
    :class:`RenderError` record and moves on to the next event.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
