"""Re-encoding a changed struct from its previous encoding gives exactly the bytes a fresh
encode gives."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from openxapi.spec.values import DateTime, Int32
from openxapi.wire import encode_value_xml
from openxapi.wire.xml_struct_delta import encode_indexed, reencode

_scalars = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.builds(Int32, st.integers(min_value=-(2**31), max_value=2**31 - 1)),
    st.just(DateTime("20261127T22:00:00Z")),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_records = st.dictionaries(st.text(min_size=1, max_size=8), _values, min_size=1, max_size=12)


@given(_records, st.data())
def test_a_changed_record_encodes_as_a_fresh_encode_would(
    record: dict[str, Any], data: st.DataObject
) -> None:
    old, offsets = encode_indexed(record)
    assert old == encode_value_xml(record)
    changed = dict(record)
    for key in data.draw(st.lists(st.sampled_from(list(record)), max_size=len(record))):
        changed[key] = data.draw(_values)
    again = reencode(old, offsets, record, changed)
    assert again is not None
    new, new_offsets = again
    assert new == encode_value_xml(changed)
    # The offsets of the result serve the next change in turn.
    changed2 = {k: (v if i % 2 else "x<&>") for i, (k, v) in enumerate(changed.items())}
    third = reencode(new, new_offsets, changed, changed2)
    assert third is not None and third[0] == encode_value_xml(changed2)


def test_records_with_other_keys_are_encoded_afresh() -> None:
    record = {"a": "1", "b": 2}
    old, offsets = encode_indexed(record)
    assert reencode(old, offsets, record, {"b": 2, "a": "1"}) is None
    assert reencode(old, offsets, record, {"a": "1"}) is None
