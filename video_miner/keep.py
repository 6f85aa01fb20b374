"""The ``keep`` rule: which frames several models' answers make worth keeping.

A small grammar over class names, parsed once when the config loads::

    rule   := any ("or" any)*
    any    := all ("and" all)*
    all    := "not" all | "(" rule ")" | NAME ["inside" NAME]

``car and text``: some car and some text; ``text inside car``: a text box whose centre lies in a
car box; ``person or dog``. A class name of several words is written with underscores
(``traffic_light``) or in quotes. Parsing and checking never evaluate anything the user wrote.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .records import Detection

_TOKEN = re.compile(r"\s*(?:(?P<open>\()|(?P<close>\))|'(?P<sq>[^']+)'|\"(?P<dq>[^\"]+)\"|(?P<word>[A-Za-z0-9_.\-]+))")
_WORDS = {"and", "or", "not", "inside"}
#: A rule longer than this is refused (the grammar is for a line, not a program).
MAX_RULE = 500
#: Brackets and "not"s nested deeper than this are refused (parsing recurses once per level).
MAX_DEPTH = 32


class KeepError(ValueError):
    """A keep rule that does not parse, or names a class no model gives."""


@dataclass(frozen=True)
class Has:
    """Some box of ``label`` (inside a box of ``inside``, when set)."""

    label: str
    inside: str | None = None

    def holds(self, boxes: dict[str, list[Detection]]) -> bool:
        found = boxes.get(self.label, [])
        if self.inside is None:
            return bool(found)
        return any(_centre_in(d, outer) for d in found for outer in boxes.get(self.inside, []))

    def labels(self) -> Iterable[str]:
        yield self.label
        if self.inside is not None:
            yield self.inside

    def __str__(self) -> str:
        return self.label if self.inside is None else f"{self.label} inside {self.inside}"


@dataclass(frozen=True)
class Not:
    term: Rule

    def holds(self, boxes: dict[str, list[Detection]]) -> bool:
        return not self.term.holds(boxes)

    def labels(self) -> Iterable[str]:
        return self.term.labels()

    def __str__(self) -> str:
        return f"not {self.term}"


@dataclass(frozen=True)
class All:
    terms: tuple[Rule, ...]
    joiner: str = "and"

    def holds(self, boxes: dict[str, list[Detection]]) -> bool:
        results = (t.holds(boxes) for t in self.terms)
        return all(results) if self.joiner == "and" else any(results)

    def labels(self) -> Iterable[str]:
        for term in self.terms:
            yield from term.labels()

    def __str__(self) -> str:
        return "(" + f" {self.joiner} ".join(str(t) for t in self.terms) + ")"


Rule = Has | Not | All


def _centre_in(inner: Detection, outer: Detection) -> bool:
    x, y = inner.xywhn[0], inner.xywhn[1]
    ox, oy, ow, oh = outer.xywhn
    return abs(x - ox) <= ow / 2 and abs(y - oy) <= oh / 2


def _shown(token: str | None) -> str:
    return (token or "")[1:] if (token or "").startswith("=") else token or ""


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise KeepError(f"keep: cannot read {text[pos:pos + 20].strip()!r} (at character {pos + 1})")
        pos = m.end()
        if m["open"] or m["close"]:
            out.append(m["open"] or m["close"])
        elif m["sq"] or m["dq"]:
            out.append("=" + (m["sq"] or m["dq"]))  # a quoted name is never a keyword
        else:
            word = m["word"]
            out.append(word.lower() if word.lower() in _WORDS else "=" + word.replace("_", " "))
    return out


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens, self.at, self.depth = tokens, 0, 0

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise KeepError("keep: the rule ends too early")
        self.at += 1
        return token

    def rule(self) -> Rule:
        return self._joined("or", self.conjunction)

    def conjunction(self) -> Rule:
        return self._joined("and", self.term)

    def _joined(self, joiner: str, below: Callable[[], Rule]) -> Rule:
        terms = [below()]
        while self.peek() == joiner:
            self.take()
            terms.append(below())
        return terms[0] if len(terms) == 1 else All(tuple(terms), joiner)

    def term(self) -> Rule:
        token = self.take()
        if token in ("not", "("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise KeepError(f"keep: brackets and 'not's nested more than {MAX_DEPTH} deep; write the rule flatter")
            try:
                if token == "not":
                    return Not(self.term())
                inner = self.rule()
                if self.take() != ")":
                    raise KeepError("keep: a '(' is not closed")
                return inner
            finally:
                self.depth -= 1
        if not token.startswith("="):
            raise KeepError(f"keep: expected a class name, got {token!r}")
        if self.peek() == "inside":
            self.take()
            outer = self.take()
            if not outer.startswith("="):
                raise KeepError(f"keep: 'inside' needs a class name after it, got {outer!r}")
            return Has(token[1:], outer[1:])
        return Has(token[1:])


@dataclass(frozen=True)
class KeepRule:
    """A parsed rule and the text it came from."""

    text: str
    rule: Rule

    def holds(self, detections: Sequence[Detection]) -> bool:
        boxes: dict[str, list[Detection]] = {}
        for d in detections:
            boxes.setdefault(d.label, []).append(d)
        return self.rule.holds(boxes)

    def labels(self) -> list[str]:
        return list(dict.fromkeys(self.rule.labels()))


def parse_keep(text: str, classes: Sequence[str]) -> KeepRule:
    """``text`` parsed and checked against ``classes`` (every model's), or a KeepError saying where."""
    if len(text) > MAX_RULE:
        raise KeepError(f"keep: a rule of {len(text)} characters is too long (at most {MAX_RULE})")
    tokens = _tokens(text)
    if not tokens:
        raise KeepError("keep: the rule is empty; write e.g. 'car and text'")
    parser = _Parser(tokens)
    rule = parser.rule()
    if parser.peek() is not None:
        raise KeepError(f"keep: unexpected {_shown(parser.peek())!r} after {rule}; join terms with 'and' or 'or'")
    parsed = KeepRule(text, rule)
    unknown = [label for label in parsed.labels() if label not in classes]
    if unknown:
        raise KeepError(f"keep: {', '.join(unknown)} is not a class any model gives; classes: {', '.join(classes)}")
    return parsed


def any_of(classes: Sequence[str]) -> KeepRule:
    """The rule when the config gives none: any class of any model."""
    return KeepRule(" or ".join(classes), All(tuple(Has(c) for c in classes), "or"))
