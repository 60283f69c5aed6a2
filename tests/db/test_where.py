"""get_all_records_where expressions: xapi's grammar, precedence, errors and evaluation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openxapi.db.serialise import db_string
from openxapi.db.where import (
    MAX_NESTING,
    And,
    Column,
    Const,
    Eq,
    Literal,
    Node,
    Not,
    Or,
    Predicate,
    UnknownColumnError,
    WhereSyntaxError,
    compile_for_class,
    parse,
)
from openxapi.spec.model import load

A = 'field "a" = "1"'
B = 'field "b" = "1"'
C = 'field "c" = "1"'


def row(**columns: str) -> Callable[[str], str | None]:
    return columns.get


def truth(a: bool, b: bool, c: bool) -> Callable[[str], str | None]:
    return row(a=str(int(a)), b=str(int(b)), c=str(int(c)))


BOOLS = [(a, b, c) for a in (False, True) for b in (False, True) for c in (False, True)]

# ------------------------------------------------------------------ grammar and precedence


def test_and_or_have_equal_precedence_and_group_from_the_left() -> None:
    assert parse(f"{A} or {B} and {C}") == parse(f"({A} or {B}) and {C}")
    assert parse(f"{A} and {B} or {C}") == parse(f"({A} and {B}) or {C}")
    assert parse(f"{A} or {B} and {C}") != parse(f"{A} or ({B} and {C})")
    for a, b, c in BOOLS:
        assert parse(f"{A} or {B} and {C}").matches(truth(a, b, c)) == ((a or b) and c)


def test_not_extends_to_the_end_of_its_group() -> None:
    assert parse(f"not {A} and {B}") == parse(f"not ({A} and {B})")
    assert parse(f"{A} and not {B} or {C}") == parse(f"{A} and not ({B} or {C})")
    assert parse(f"(not {A}) and {B}") != parse(f"not {A} and {B}")
    for a, b, c in BOOLS:
        assert parse(f"not {A} and {B}").matches(truth(a, b, c)) == (not (a and b))
        assert parse(f"(not {A}) and {B}").matches(truth(a, b, c)) == ((not a) and b)
        got = parse(f"{A} and not {B} or {C}").matches(truth(a, b, c))
        assert got == (a and not (b or c))


def test_tree_shapes() -> None:
    assert parse("true").tree == Const(True)
    assert parse("not not false").tree == Not(Not(Const(False)))
    assert parse('"x" = field "name__label"').tree == Eq(Literal("x"), Column("name__label"))
    assert parse("true and false or true").tree == Or(And(Const(True), Const(False)), Const(True))


@pytest.mark.parametrize(
    "text",
    [
        'field"name__label"="x"and(true)',
        'field "name__label"\t=\n"x"',
        "  true  ",
        "trueand true",
        'notfield "a"="b"',
        "(((true)))",
        'not(field "a"="b")or(false)',
    ],
)
def test_blanks_are_optional_between_tokens(text: str) -> None:
    assert isinstance(parse(text), Predicate)


def test_strings_have_no_escapes_and_hold_anything_but_a_double_quote() -> None:
    p = parse('field "k" = "a\\" and "x" = "x"')
    assert p.tree == And(Eq(Column("k"), Literal("a\\")), Eq(Literal("x"), Literal("x")))
    q = parse('field "k" = "( or not true ) \n \' caf\u00e9"')
    assert q.tree == Eq(Column("k"), Literal("( or not true ) \n ' caf\u00e9"))
    assert parse('"" = field ""').tree == Eq(Literal(""), Column(""))


def test_literal_and_field_on_either_side_of_equals() -> None:
    lookup = row(name__label="web", other="web")
    assert parse('field "name__label" = "web"').matches(lookup)
    assert parse('"web" = field "name__label"').matches(lookup)
    assert parse('field "name__label" = field "other"').matches(lookup)
    assert parse('"web" = "web"').matches(lookup)
    assert not parse('"web" = "db"').matches(lookup)
    assert not parse('field "name__label" = "Web"').matches(lookup)


def test_true_false_not() -> None:
    assert parse("true").matches(row())
    assert not parse("false").matches(row())
    assert parse("not false").matches(row())
    assert not parse("not not false").matches(row())


def test_columns_lists_every_field_reference() -> None:
    p = parse(f'{A} or not (field "b" = field "c" and "x" = "y") or true')
    assert p.columns == frozenset({"a", "b", "c"})
    assert parse("true").columns == frozenset()


def test_str_renders_an_equivalent_expression() -> None:
    p = parse(f"not {A} and {B} or {C}")
    assert parse(str(p)) == p


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "lexing"),
    [
        ("subroles<>[]", True),
        ("field name = x", True),
        ('field "a" = "unterminated', True),
        ('field "a" != "b"', True),
        ("TRUE", True),
        ("True", True),
        ('field "a" = "b"\r\n', True),
        ("true && false", True),
        ("", False),
        ("   ", False),
        ('field "a"', False),
        ('"a"', False),
        ('"a" = "b" = "c"', False),
        ("( true", False),
        ("true )", False),
        ("()", False),
        ("truefalse", False),
        ('field = "x"', False),
        ('field field "a" = "b"', False),
        ('"a" and "b"', False),
        ("not", False),
        ("and true", False),
        ("true and", False),
        ("true not false", False),
        ('field "a" = true', False),
    ],
)
def test_malformed_expressions(text: str, lexing: bool) -> None:
    with pytest.raises(WhereSyntaxError) as caught:
        parse(text)
    err = caught.value
    assert isinstance(err, ValueError)
    assert err.expr == text
    assert err.lexing is lexing
    api = err.api_error()
    assert api.code == "INVALID_VALUE"
    assert api.params[0] == text
    assert ("lexing: empty token" in api.params[1]) is lexing


def test_error_message_points_at_the_problem() -> None:
    with pytest.raises(WhereSyntaxError) as caught:
        parse('field "a" = "b" <> "c"')
    assert caught.value.position == 16
    assert "'<'" in str(caught.value)
    with pytest.raises(WhereSyntaxError) as caught:
        parse('field "a" "b"')
    assert caught.value.position == 10
    assert '"="' in str(caught.value)


def test_deep_nesting_is_a_syntax_error_not_a_crash() -> None:
    with pytest.raises(WhereSyntaxError):
        parse("(" * 5000 + "true" + ")" * 5000)
    with pytest.raises(WhereSyntaxError):
        parse("not " * 5000 + "true")
    assert parse("(" * MAX_NESTING + "true" + ")" * MAX_NESTING).matches(row())
    assert not parse("not " * MAX_NESTING + "false").matches(row())


def test_long_chains_parse_and_evaluate() -> None:
    p = parse(" and ".join(["true"] * 20000) + " or false")
    assert p.matches(row())
    vm = load().classes["VM"]
    matcher = compile_for_class(" or ".join([A.replace('"a"', '"uuid"')] * 20000), vm)
    assert not matcher("OpaqueRef:x", {"uuid": "u"})


# -------------------------------------------------------------------- unknown columns


def test_unknown_column_is_an_error_when_evaluation_reaches_it() -> None:
    with pytest.raises(UnknownColumnError) as caught:
        parse('field "nope" = "x"').matches(row(a="1"))
    assert caught.value.column == "nope"
    assert caught.value.api_error().description() == ["INTERNAL_ERROR", "missing field", "nope", ""]


def test_and_or_short_circuit_past_unknown_columns() -> None:
    assert not parse('false and field "nope" = "x"').matches(row())
    assert parse('true or field "nope" = "x"').matches(row())
    with pytest.raises(UnknownColumnError):
        parse('true and field "nope" = "x"').matches(row())


def test_the_right_side_of_equals_is_read_first() -> None:
    with pytest.raises(UnknownColumnError) as caught:
        parse('field "left" = field "right"').matches(row())
    assert caught.value.column == "right"


# ------------------------------------------------------------------- class records


@pytest.fixture(scope="module")
def vm_record() -> dict[str, Any]:
    vm = load().classes["VM"]
    record = {f.name: f.default for f in vm.fields}
    record.update(
        name_label="web-01",
        power_state="Running",
        memory_static_max=2147483648,
        tags=["prod", "it's"],
        other_config={"folder": "/x"},
        HVM_shadow_multiplier=1.0,
    )
    return record


TAGS = "('prod' 'it\\'s')"
REF = "OpaqueRef:0c9b6f1e-3d2a-4c55-9a43-7e6b8d1f2a10"


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('field "name__label" = "web-01"', True),
        ('field "name__label" = "x"', False),
        ('"web-01" = field "name__label"', True),
        ('field "power_state" = "Running"', True),
        ('field "is_a_template" = "false"', True),
        ('field "is_a_template" = "False"', False),
        ('field "memory__static_max" = "2147483648"', True),
        ('field "HVM__shadow_multiplier" = "1"', True),
        ('field "HVM__shadow_multiplier" = "1."', False),
        (f'field "tags" = "{TAGS}"', True),
        ("field \"other_config\" = \"(('folder' '/x'))\"", True),
        ('field "VBDs" = "()"', True),
        ('field "snapshot_time" = "19700101T00:00:00Z"', True),
        ('field "resident_on" = "OpaqueRef:NULL"', True),
        (f'field "_ref" = "{REF}"', True),
        ('field "_ref" = "OpaqueRef:other"', False),
        ('field "power_state" = "Running" and not field "is_a_template" = "true"', True),
        ('field "name__label" = field "name__description"', False),
        ("true", True),
    ],
)
def test_vm_records(vm_record: dict[str, Any], expr: str, expected: bool) -> None:
    vm = load().classes["VM"]
    assert compile_for_class(expr, vm)(REF, vm_record) is expected


def test_wire_names_are_not_columns(vm_record: dict[str, Any]) -> None:
    vm = load().classes["VM"]
    matcher = compile_for_class('field "name_label" = "web-01"', vm)
    with pytest.raises(UnknownColumnError) as caught:
        matcher(REF, vm_record)
    assert caught.value.column == "name_label"
    assert not compile_for_class('false and field "name_label" = "x"', vm)(REF, vm_record)


def test_compile_reports_syntax_errors_at_once() -> None:
    with pytest.raises(WhereSyntaxError):
        compile_for_class("name_label = 'x'", load().classes["VM"])


def test_missing_record_members_read_as_the_field_default() -> None:
    vm = load().classes["VM"]
    assert compile_for_class('field "power_state" = "Halted"', vm)(REF, {})


# -------------------------------------------------------------------------- properties


@given(st.text())
@settings(max_examples=500, deadline=None)
def test_any_text_parses_or_raises_a_syntax_error(text: str) -> None:
    try:
        parse(text)
    except WhereSyntaxError:
        pass


TOKENS = ["true", "false", "and", "or", "not", "(", ")", "=", "field", '"a"', '"b"', '""', " ", "<"]


@given(st.lists(st.sampled_from(TOKENS), max_size=30), st.sampled_from(["", " ", "\n"]))
@settings(max_examples=500, deadline=None)
def test_any_token_soup_parses_or_raises_a_syntax_error(tokens: list[str], sep: str) -> None:
    text = sep.join(tokens)
    try:
        p = parse(text)
    except WhereSyntaxError:
        return
    assert parse(str(p)) == p


COLUMNS = ["name__label", "power_state", "is_a_template", "_ref", "tags", "nope"]
LITERALS = ["web-01", "Running", "false", "true", REF, "()", ""]

values = st.one_of(st.sampled_from(COLUMNS).map(Column), st.sampled_from(LITERALS).map(Literal))
trees: st.SearchStrategy[Node] = st.recursive(
    st.one_of(st.booleans().map(Const), st.builds(Eq, values, values)),
    lambda sub: st.one_of(st.builds(Not, sub), st.builds(And, sub, sub), st.builds(Or, sub, sub)),
    max_leaves=12,
)


def _model_eval(node: Node, lookup: Callable[[str], str | None]) -> bool:
    """A direct reading of xapi's evaluator, independent of the module under test."""
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Not):
        return not _model_eval(node.inner, lookup)
    if isinstance(node, And):
        return _model_eval(node.left, lookup) and _model_eval(node.right, lookup)
    if isinstance(node, Or):
        return _model_eval(node.left, lookup) or _model_eval(node.right, lookup)

    def val(v: Column | Literal) -> str:
        if isinstance(v, Literal):
            return v.text
        found = lookup(v.name)
        if found is None:
            raise UnknownColumnError(v.name)
        return found

    right = val(node.right)
    return val(node.left) == right


def _outcome(f: Callable[[], bool]) -> bool | str:
    try:
        return f()
    except UnknownColumnError as e:
        return "missing " + e.column


@given(trees)
@settings(max_examples=400, deadline=None)
def test_rendered_trees_parse_back_and_compiled_matchers_agree(tree: Node) -> None:
    p = Predicate(tree)
    assert parse(str(p)) == p
    vm = load().classes["VM"]
    record = {f.name: f.default for f in vm.fields}
    record.update(name_label="web-01", power_state="Running", tags=["a"])
    columns = {f.column: db_string(record[f.name], f.type) for f in vm.fields}
    columns["_ref"] = REF
    expected = _outcome(lambda: _model_eval(tree, columns.get))
    assert _outcome(lambda: p.matches(columns.get)) == expected
    matcher = compile_for_class(str(p), vm)
    assert _outcome(lambda: matcher(REF, record)) == expected
