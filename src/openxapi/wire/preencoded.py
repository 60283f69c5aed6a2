"""Values whose wire encoding was computed once and is reused verbatim.

The API layer caches the XML-RPC and JSON-RPC bytes of each object record, so a reply listing
thousands of records is a join of cached fragments instead of a fresh walk over every field.
"""

from __future__ import annotations


class Preencoded:
    """A value already encoded for both codecs.

    ``xml`` is one complete ``<value>…</value>`` element and ``json`` one complete JSON value;
    encoders copy them into the reply unchanged, so they must be correct for their codec.
    """

    __slots__ = ("json", "xml")

    def __init__(self, xml: bytes, json: bytes) -> None:
        self.xml = xml
        self.json = json

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Preencoded):
            return NotImplemented
        return self.xml == other.xml and self.json == other.json

    def __hash__(self) -> int:
        return hash((self.xml, self.json))

    def __repr__(self) -> str:
        return f"Preencoded(xml={self.xml!r}, json={self.json!r})"
