"""A small OData ``$filter`` engine, enough for how mail clients look messages up.

Supported: ``eq ne gt ge lt le``, ``and or not``, parentheses, ``contains/startswith/endswith``,
string (``''`` is a literal quote), number, ``true/false/null`` and bare date-time literals,
property paths (``from/emailAddress/address``) and the lambda
``singleValueExtendedProperties/any(ep: ep/id eq '...' and ep/value eq '...')``.

String comparisons ignore case, as Exchange does, except the *Name* part of an extended
property id, which Graph documents as case-sensitive; the type and GUID parts of such ids
compare case-insensitively (``{00020329-...-C000-...}`` equals ``{00020329-...-c000-...}``).
A filter the engine cannot parse is a 400 ``BadRequest`` "Invalid filter clause", as in Graph.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import bad_request

__all__ = ["Predicate", "lookup", "parse_filter", "property_id_key"]

#: A compiled filter: takes the variable bindings ({"$it": record, "ep": item, ...}).
Predicate = Callable[[dict[str, Any]], Any]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^']|'')*')
      | (?P<date>\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)
      | (?P<num>-?\d+(?:\.\d+)?)
      | (?P<name>[A-Za-z_$@][A-Za-z0-9_.$@]*(?:/[A-Za-z_$@][A-Za-z0-9_.$@]*)*)
      | (?P<punct>[(),:])
    )""",
    re.VERBOSE,
)
_COMPARISONS: dict[str, Callable[[int], bool]] = {
    "eq": lambda c: c == 0,
    "ne": lambda c: c != 0,
    "gt": lambda c: c > 0,
    "ge": lambda c: c >= 0,
    "lt": lambda c: c < 0,
    "le": lambda c: c <= 0,
}
_FUNCTIONS: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda a, b: b in a,
    "startswith": str.startswith,
    "endswith": str.endswith,
}
_PROP_ID = re.compile(
    r"^\s*(\w+)\s+(\{[0-9a-f-]{36}\})\s+(name|id)\s+(.+?)\s*$|^\s*(\w+)\s+(0x[0-9a-f]+)\s*$", re.IGNORECASE
)


def property_id_key(value: str) -> tuple[str, ...] | None:
    """Canonical form of an extended property id, or None if ``value`` is not one."""
    match = _PROP_ID.match(value)
    if match is None:
        return None
    if match.group(5) is not None:
        return (match.group(5).lower(), match.group(6).lower())
    kind = match.group(3).lower()
    name = match.group(4) if kind == "name" else match.group(4).lower()
    return (match.group(1).lower(), match.group(2).lower(), kind, name)


def lookup(record: Any, path: list[str]) -> Any:
    """Follow ``path`` through nested dicts, matching keys case-insensitively; None if absent."""
    current = record
    for segment in path:
        if not isinstance(current, dict):
            return None
        folded = segment.lower()
        current = next((v for k, v in current.items() if k.lower() == folded), None)
    return current


def _compare(left: Any, right: Any) -> int | None:
    if isinstance(left, str) and isinstance(right, str):
        left_key, right_key = property_id_key(left), property_id_key(right)
        if left_key is not None and right_key is not None:
            return 0 if left_key == right_key else 1
        left, right = left.lower(), right.lower()
    if left is None or right is None:
        return 0 if left is right else 1
    try:
        return int(left > right) - int(left < right)
    except TypeError:
        return None  # incomparable types never match, as in OData


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                if text[position:].strip() == "":
                    break
                raise self.error(f"unexpected text at {position}: {text[position : position + 20]!r}")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.index = 0

    def error(self, why: str) -> Exception:
        return bad_request(f"Invalid filter clause: {why}")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1].lower() != value):
            raise self.error(f"expected {value or 'more input'} in {self.text!r}")
        self.index += 1
        return token

    def at_keyword(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "name" and token[1].lower() in words

    def parse(self) -> Predicate:
        predicate = self.or_expr()
        leftover = self.peek()
        if leftover is not None:
            raise self.error(f"unexpected {leftover[1]!r}")
        return predicate

    def or_expr(self) -> Predicate:
        parts = [self.and_expr()]
        while self.at_keyword("or"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else (lambda env: any(p(env) for p in parts))

    def and_expr(self) -> Predicate:
        parts = [self.unary()]
        while self.at_keyword("and"):
            self.take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else (lambda env: all(p(env) for p in parts))

    def unary(self) -> Predicate:
        if self.at_keyword("not"):
            self.take()
            inner = self.unary()
            return lambda env: not inner(env)
        return self.comparison()

    def comparison(self) -> Predicate:
        left = self.operand()
        if not self.at_keyword(*_COMPARISONS):
            return left
        op = _COMPARISONS[self.take()[1].lower()]
        right = self.operand()

        def compare(env: dict[str, Any]) -> bool:
            result = _compare(left(env), right(env))
            return result is not None and op(result)

        return compare

    def operand(self) -> Predicate:
        kind, value = self.take()
        if kind == "punct" and value == "(":
            inner = self.or_expr()
            self.take(")")
            return inner
        if kind == "str":
            literal = value[1:-1].replace("''", "'")
            return lambda env: literal
        if kind == "num":
            number = float(value) if "." in value else int(value)
            return lambda env: number
        if kind == "date":
            return lambda env: value
        if kind != "name":
            raise self.error(f"unexpected {value!r}")
        keyword = value.lower()
        if keyword in ("true", "false", "null"):
            constant = {"true": True, "false": False, "null": None}[keyword]
            return lambda env: constant
        if keyword in _FUNCTIONS and self.peek() == ("punct", "("):
            return self.function(_FUNCTIONS[keyword])
        return self.path(value)

    def function(self, apply: Callable[[str, str], bool]) -> Predicate:
        self.take("(")
        first = self.or_expr()
        self.take(",")
        second = self.or_expr()
        self.take(")")

        def call(env: dict[str, Any]) -> bool:
            a, b = first(env), second(env)
            return isinstance(a, str) and isinstance(b, str) and apply(a.lower(), b.lower())

        return call

    def path(self, text: str) -> Predicate:
        segments = text.split("/")
        if segments[-1].lower() in ("any", "all") and self.peek() == ("punct", "("):
            quantifier = any if segments[-1].lower() == "any" else all
            self.take("(")
            variable = self.take()[1]
            self.take(":")
            body = self.or_expr()
            self.take(")")
            collection = self.path("/".join(segments[:-1]))

            def over(env: dict[str, Any]) -> bool:
                items = collection(env)
                return isinstance(items, list) and quantifier(body({**env, variable: i}) for i in items)

            return over

        def resolve(env: dict[str, Any]) -> Any:
            if segments[0] in env:
                return lookup(env[segments[0]], segments[1:])
            return lookup(env["$it"], segments)

        return resolve


def parse_filter(text: str) -> Predicate:
    """Compile ``text`` into a predicate over ``{"$it": record}``; raises 400 if unsupported."""
    return _Parser(text).parse()
