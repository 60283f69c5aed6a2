"""Wire codecs: XML-RPC and JSON-RPC requests in, replies out, byte-compatible with xapi.

The codecs know nothing of the API description or the object store: they turn bytes into
plain Python values (str, int, float, bool, list, dict, None, DateTime, bytes) and back.
"""

from __future__ import annotations

from typing import Any

from openxapi.wire.errors import WireParseError
from openxapi.wire.jsonrpc import encode_value as encode_value_json
from openxapi.wire.preencoded import Preencoded
from openxapi.wire.xmlrpc import encode_value as encode_value_xml

__all__ = [
    "Preencoded",
    "WireParseError",
    "encode_value_json",
    "encode_value_xml",
    "preencode",
]


def preencode(value: Any) -> Preencoded:
    """Encode ``value`` once for both codecs, so replies can embed it without re-encoding."""
    return Preencoded(encode_value_xml(value), encode_value_json(value))
