"""RFC 6750 ``WWW-Authenticate`` parsing and the one decision that follows from it: may a refused
request be retried with a newer token?

The rule is the broker's own (``authkeeper_core::www_authenticate``): a 401 means the token is
expired or revoked (report it and retry once) unless its Bearer challenge says
``error="insufficient_scope"`` or ``error="invalid_request"``; a 401 with ``invalid_token``,
without an error code or without the header at all is retried. A 403 never is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

__all__ = ["Challenge", "parse_challenges", "should_refresh"]

_SEPARATORS = ' \t,="'

#: Bearer error codes after which a new token cannot help.
_NO_RETRY_ERRORS = ("insufficient_scope", "invalid_request")


@dataclass
class Challenge:
    """One challenge: its scheme, parameters (names lower-cased) and token68 value."""

    scheme: str
    params: Dict[str, str] = field(default_factory=dict)
    token68: Optional[str] = None


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip(self, chars: str = " \t") -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def token(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _SEPARATORS:
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self) -> str:
        self.pos += 1  # opening quote
        out: List[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\" and self.pos < len(self.text):
                out.append(self.text[self.pos])
                self.pos += 1
            elif char == '"':
                break
            else:
                out.append(char)
        return "".join(out)

    def value(self) -> str:
        self.skip()
        return self.quoted() if self.peek() == '"' else self.token()

    def is_param_next(self) -> bool:
        """Whether ``name =`` follows (a parameter rather than a new scheme or a token68)."""
        saved = self.pos
        self.skip()
        name = self.token()
        self.skip()
        answer = bool(name) and self.peek() == "=" and self.text[self.pos : self.pos + 2] != "=="
        self.pos = saved
        return answer


def parse_challenges(header: str) -> List[Challenge]:
    """Parses one ``WWW-Authenticate`` value into its challenges; malformed parts are skipped."""
    scanner = _Scanner(header)
    challenges: List[Challenge] = []
    current: Optional[Challenge] = None
    while scanner.pos < len(header):
        scanner.skip(" \t,")
        if scanner.pos >= len(header):
            break
        if current is not None and scanner.is_param_next():
            scanner.skip()
            name = scanner.token().lower()
            scanner.skip()
            scanner.pos += 1  # "="
            current.params[name] = scanner.value()
            continue
        scheme = scanner.token()
        if not scheme:
            scanner.pos += 1  # a stray separator
            continue
        current = Challenge(scheme)
        challenges.append(current)
        scanner.skip()
        if scanner.peek() not in ("", ",") and not scanner.is_param_next():
            start = scanner.pos
            scanner.token()
            scanner.skip("=")
            current.token68 = header[start : scanner.pos]
    return challenges


def should_refresh(status: int, www_authenticate: Iterable[str]) -> bool:
    """Whether an API answer of ``status`` with these ``WWW-Authenticate`` values means the token
    was expired or revoked, so that reporting it and retrying once with a newer token can help."""
    if status != 401:
        return False
    for value in www_authenticate:
        for challenge in parse_challenges(value):
            if challenge.scheme.lower() in ("bearer", "dpop"):
                return challenge.params.get("error") not in _NO_RETRY_ERRORS
    return True
