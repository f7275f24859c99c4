"""The answer of every completeness check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["complete", "incomplete", "corrupt", "unreadable"]


@dataclass(frozen=True)
class Verdict:
    """``complete`` (safe to commit), ``incomplete`` (may still be written: look again later),
    ``corrupt`` (will not become valid by waiting: never commit), ``unreadable`` (permission: the
    reason names the fix). ``reason`` is one human line, empty for ``complete``."""

    state: State
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True only for ``complete``."""
        return self.state == "complete"


COMPLETE = Verdict("complete")


def incomplete(reason: str) -> Verdict:
    """Shorthand for ``Verdict("incomplete", reason)``."""
    return Verdict("incomplete", reason)


def corrupt(reason: str) -> Verdict:
    """Shorthand for ``Verdict("corrupt", reason)``."""
    return Verdict("corrupt", reason)


def worst(verdicts: list[Verdict]) -> Verdict:
    """The first non-complete verdict by severity (unreadable > corrupt > incomplete), else complete."""
    for state in ("unreadable", "corrupt", "incomplete"):
        for v in verdicts:
            if v.state == state:
                return v
    return COMPLETE
