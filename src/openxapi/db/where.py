"""The expression language of ``get_all_records_where`` and ``get_all_where``.

Clients filter with strings such as ``field "power_state" = "Running" and not
field "is_a_template" = "true"``; the grammar, token rules and evaluation order are
xapi's, so the same expression selects the same objects here as there:

* tokens: ``=``, ``(``, ``)``, the keywords ``true false field and or not`` and
  double-quoted strings with no escapes; blanks (space, tab, newline) are skipped and
  never required, so ``field"a"="b"and(true)`` is one valid expression;
* ``and`` and ``or`` have equal precedence and associate to the left;
* ``not`` has the *lowest* precedence (xapi declares it before ``and``/``or``), so
  it applies to everything up to the closing parenthesis or the end:
  ``not A and B`` means ``not (A and B)``;
* ``=`` compares strings: a literal, or a column's database string (see
  :mod:`openxapi.db.serialise`); column names are DB column names (``name__label``)
  plus ``_ref``;
* a column the table lacks is an error, raised only when a row's evaluation reaches
  it (``and``/``or`` short-circuit from the left).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from openxapi.db.serialise import Converter, converter_for
from openxapi.errors import ApiError
from openxapi.spec import model

REF_COLUMN = "_ref"
MAX_NESTING = 200

# The exception texts xapi puts in INVALID_VALUE's second parameter.
_LEX_FAILURE = 'Failure("lexing: empty token")'
_PARSE_FAILURE = "Xapi_database__Db_filter_parse.MenhirBasics.Error"


class WhereSyntaxError(ValueError):
    """A where-expression that does not lex or parse."""

    def __init__(self, message: str, expr: str, position: int, *, lexing: bool) -> None:
        shown = expr if len(expr) <= 200 else expr[:200] + "..."
        super().__init__(f"{message} at offset {position} in where-expression {shown!r}")
        self.expr = expr
        self.position = position
        self.lexing = lexing

    def api_error(self) -> ApiError:
        """xapi's answer: ``INVALID_VALUE [expr; exception text]``."""
        return ApiError("INVALID_VALUE", self.expr, _LEX_FAILURE if self.lexing else _PARSE_FAILURE)


class UnknownColumnError(LookupError):
    """A ``field "name"`` naming no column of the table, met while evaluating a row."""

    def __init__(self, column: str) -> None:
        super().__init__(f"missing field {column!r}")
        self.column = column

    def api_error(self) -> ApiError:
        """xapi's answer: ``INTERNAL_ERROR ["missing field"; column; ""]``."""
        return ApiError("INTERNAL_ERROR", "missing field", self.column, "")


@dataclass(frozen=True, slots=True)
class Column:
    """``field "name"``: the database string of a column of the row."""

    name: str


@dataclass(frozen=True, slots=True)
class Literal:
    """``"text"``: a constant string."""

    text: str


Value = Column | Literal


@dataclass(frozen=True, slots=True)
class Const:
    value: bool


@dataclass(frozen=True, slots=True)
class Not:
    inner: Node


@dataclass(frozen=True, slots=True)
class And:
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Or:
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Eq:
    left: Value
    right: Value


Node = Const | Not | And | Or | Eq
Lookup = Callable[[str], str | None]
Matcher = Callable[[str, Mapping[str, Any]], bool]


class Predicate:
    """A parsed expression: test rows with :meth:`matches`, see what it reads in ``columns``."""

    __slots__ = ("columns", "tree")

    def __init__(self, tree: Node) -> None:
        self.tree = tree
        self.columns: frozenset[str] = _columns_of(tree)

    def matches(self, lookup: Lookup) -> bool:
        """Evaluate against one row; ``lookup(column)`` is its DB string, None if no such column.

        Raises :class:`UnknownColumnError` when evaluation reaches an unknown column.
        """
        return _eval(self.tree, lookup)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Predicate) and other.tree == self.tree

    def __hash__(self) -> int:
        return hash(self.tree)

    def __str__(self) -> str:
        return _render(self.tree)

    def __repr__(self) -> str:
        return f"Predicate({_render(self.tree)!r})"


# ---------------------------------------------------------------------------- lexing

_TOKEN_RE = re.compile(
    r'(?P<blank>[ \t\n]+)|(?P<op>[=()])|(?P<kw>true|false|field|and|or|not)|"(?P<str>[^"]*)"'
)

_EOF = "<end>"
_STRING = "<string>"


def _tokens(expr: str) -> Iterator[tuple[str, str, int]]:
    """Yield ``(kind, text, offset)``: kind is the operator or keyword, or _STRING / _EOF."""
    pos = 0
    end = len(expr)
    match = _TOKEN_RE.match
    while pos < end:
        m = match(expr, pos)
        if m is None:
            if expr[pos] == '"':
                raise WhereSyntaxError("unterminated string", expr, pos, lexing=True)
            raise WhereSyntaxError(f"unexpected character {expr[pos]!r}", expr, pos, lexing=True)
        kind = m.lastgroup
        if kind == "str":
            yield _STRING, m.group("str"), pos
        elif kind != "blank":
            yield m.group(), m.group(), pos
        pos = m.end()
    yield _EOF, "", end


# --------------------------------------------------------------------------- parsing


def _describe(kind: str, text: str) -> str:
    if kind == _EOF:
        return "end of expression"
    if kind == _STRING:
        return f'string "{text}"'
    return repr(text)


class _Parser:
    """Recursive descent with one token of lookahead, read as xapi's LR parser reads it."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = _tokens(expr)
        self.kind, self.text, self.pos = next(self.tokens)
        self.depth = 0

    def advance(self) -> None:
        self.kind, self.text, self.pos = next(self.tokens)

    def fail(self, expected: str) -> WhereSyntaxError:
        found = _describe(self.kind, self.text)
        return WhereSyntaxError(
            f"expected {expected}, found {found}", self.expr, self.pos, lexing=False
        )

    def parse(self) -> Node:
        tree = self.expression()
        if self.kind != _EOF:
            raise self.fail('"and", "or" or end of expression')
        return tree

    def expression(self) -> Node:
        """A chain of operands joined by ``and``/``or``, grouped from the left."""
        tree = self.operand()
        while self.kind == "and" or self.kind == "or":
            is_and = self.kind == "and"
            self.advance()
            right = self.operand()
            tree = And(tree, right) if is_and else Or(tree, right)
        return tree

    def operand(self) -> Node:
        kind = self.kind
        if kind == "true" or kind == "false":
            self.advance()
            return Const(kind == "true")
        if kind == "not" or kind == "(":
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise WhereSyntaxError(
                    f"expression nested more than {MAX_NESTING} deep",
                    self.expr,
                    self.pos,
                    lexing=False,
                )
            self.advance()
            inner = self.expression()
            if kind == "(":
                if self.kind != ")":
                    raise self.fail('"and", "or" or ")"')
                self.advance()
            self.depth -= 1
            return Not(inner) if kind == "not" else inner
        if kind == _STRING or kind == "field":
            left = self.value()
            if self.kind != "=":
                raise self.fail('"="')
            self.advance()
            return Eq(left, self.value())
        raise self.fail('an expression ("true", "false", "not", "(", "field" or a string)')

    def value(self) -> Value:
        if self.kind == "field":
            self.advance()
            if self.kind != _STRING:
                raise self.fail("a quoted column name")
            name = self.text
            self.advance()
            return Column(name)
        if self.kind == _STRING:
            text = self.text
            self.advance()
            return Literal(text)
        raise self.fail('"field" or a string')


@lru_cache(maxsize=256)
def _parse_cached(expr: str) -> Predicate:
    try:
        return Predicate(_Parser(expr).parse())
    except RecursionError:
        raise WhereSyntaxError("expression nested too deeply", expr, 0, lexing=False) from None


def parse(expr: str) -> Predicate:
    """Parse a where-expression; :class:`WhereSyntaxError` for anything malformed."""
    if not isinstance(expr, str):
        raise WhereSyntaxError("expression is not a string", str(expr), 0, lexing=True)
    return _parse_cached(expr)


# ------------------------------------------------------------------------ evaluation


def _spine(node: Node) -> tuple[Node, list[And | Or]]:
    """The leftmost operand of an and/or chain and the chain's links, innermost first."""
    links: list[And | Or] = []
    while isinstance(node, (And, Or)):
        links.append(node)
        node = node.left
    links.reverse()
    return node, links


def _value(v: Value, lookup: Lookup) -> str:
    if isinstance(v, Literal):
        return v.text
    found = lookup(v.name)
    if found is None:
        raise UnknownColumnError(v.name)
    return found


def _eval(node: Node, lookup: Lookup) -> bool:
    first, links = _spine(node)
    if isinstance(first, Eq):
        # xapi reads the right-hand side first (OCaml's argument order).
        right = _value(first.right, lookup)
        acc = _value(first.left, lookup) == right
    elif isinstance(first, Const):
        acc = first.value
    elif isinstance(first, Not):
        acc = not _eval(first.inner, lookup)
    else:  # pragma: no cover - _spine never returns a chain link
        raise AssertionError(first)
    for link in links:
        if isinstance(link, And):
            if acc:
                acc = _eval(link.right, lookup)
        elif not acc:
            acc = _eval(link.right, lookup)
    return acc


def _columns_of(tree: Node) -> frozenset[str]:
    names: set[str] = set()
    stack: list[Node] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Eq):
            for v in (node.left, node.right):
                if isinstance(v, Column):
                    names.add(v.name)
        elif isinstance(node, Not):
            stack.append(node.inner)
        elif isinstance(node, (And, Or)):
            stack.append(node.left)
            stack.append(node.right)
    return frozenset(names)


def _render_value(v: Value) -> str:
    return f'field "{v.name}"' if isinstance(v, Column) else f'"{v.text}"'


def _render(node: Node) -> str:
    first, links = _spine(node)
    text = _render_operand(first)
    for link in links:
        op = "and" if isinstance(link, And) else "or"
        text = f"{text} {op} {_render_operand(link.right)}"
    return text


def _render_operand(node: Node) -> str:
    if isinstance(node, Const):
        return "true" if node.value else "false"
    if isinstance(node, Eq):
        return f"{_render_value(node.left)} = {_render_value(node.right)}"
    if isinstance(node, Not):
        return f"(not {_render(node.inner)})"
    return f"({_render(node)})"


# ------------------------------------------------------------- matching class records

_Getter = Callable[[str, Mapping[str, Any]], str]


def _missing(name: str) -> _Getter:
    def get(ref: str, record: Mapping[str, Any]) -> str:
        raise UnknownColumnError(name)

    return get


def _field_getter(fname: str, conv: Converter, default: Any) -> _Getter:
    def get(ref: str, record: Mapping[str, Any]) -> str:
        return conv(record.get(fname, default))

    return get


def _ref_getter(ref: str, record: Mapping[str, Any]) -> str:
    return ref


class _Compiler:
    def __init__(self, cls: model.Class) -> None:
        self.columns = {f.column: (f.name, converter_for(f.type), f.default) for f in cls.fields}

    def getter(self, v: Value) -> _Getter:
        if isinstance(v, Literal):
            text = v.text
            return lambda ref, record: text
        if v.name == REF_COLUMN:
            return _ref_getter
        entry = self.columns.get(v.name)
        if entry is None:
            return _missing(v.name)
        return _field_getter(*entry)

    def eq(self, node: Eq) -> Matcher:
        left, right = node.left, node.right
        if isinstance(left, Literal) and isinstance(right, Literal):
            same = left.text == right.text
            return lambda ref, record: same
        if isinstance(right, Literal) or isinstance(left, Literal):
            column, literal = (left, right) if isinstance(right, Literal) else (right, left)
            assert isinstance(column, Column) and isinstance(literal, Literal)
            text = literal.text
            entry = self.columns.get(column.name)
            if entry is not None:
                fname, conv, default = entry
                return lambda ref, record: conv(record.get(fname, default)) == text
            get = self.getter(column)
            return lambda ref, record: get(ref, record) == text
        get_left, get_right = self.getter(left), self.getter(right)

        def both(ref: str, record: Mapping[str, Any]) -> bool:
            r = get_right(ref, record)
            return get_left(ref, record) == r

        return both

    def operand(self, node: Node) -> Matcher:
        if isinstance(node, Const):
            value = node.value
            return lambda ref, record: value
        if isinstance(node, Eq):
            return self.eq(node)
        if isinstance(node, Not):
            inner = self.node(node.inner)
            return lambda ref, record: not inner(ref, record)
        return self.node(node)

    def node(self, node: Node) -> Matcher:
        first, links = _spine(node)
        head = self.operand(first)
        if not links:
            return head
        steps = [(isinstance(link, And), self.operand(link.right)) for link in links]
        if len(steps) == 1:
            is_and, other = steps[0]
            if is_and:
                return lambda ref, record: head(ref, record) and other(ref, record)
            return lambda ref, record: head(ref, record) or other(ref, record)

        def chain(ref: str, record: Mapping[str, Any]) -> bool:
            acc = head(ref, record)
            for is_and, test in steps:
                if is_and:
                    if acc:
                        acc = test(ref, record)
                elif not acc:
                    acc = test(ref, record)
            return acc

        return chain


def compile_for_class(expr: str, cls: model.Class) -> Matcher:
    """A fast ``matcher(ref, record)`` for records of ``cls`` (dicts keyed by wire field name).

    Column names map to fields through ``Field.column``; ``_ref`` is the object's ref.
    Raises :class:`WhereSyntaxError` now, :class:`UnknownColumnError` when a match
    reaches a column ``cls`` lacks.
    """
    return _Compiler(cls).node(parse(expr).tree)
