"""The error a codec raises when a request envelope cannot be read at all.

Such requests never reach the dispatcher: like the reference, the HTTP layer answers them with
HTTP 500 and a short text body rather than with an RPC-level error.
"""

from __future__ import annotations


class WireParseError(Exception):
    """The request body is not a valid XML-RPC or JSON-RPC call."""
