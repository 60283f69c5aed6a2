"""The one exception type the API speaks: a XenAPI error code and its string parameters.

Every layer raises it; the wire layer turns it into a Failure / JSON-RPC error.
"""

from __future__ import annotations


class ApiError(Exception):
    """A XenAPI failure: ``[code, param1, param2, ...]`` on the wire."""

    def __init__(self, code: str, *params: object) -> None:
        self.code = code
        self.params = [p if isinstance(p, str) else str(p) for p in params]
        super().__init__(code, *self.params)

    def description(self) -> list[str]:
        """The ErrorDescription list as clients see it."""
        return [self.code, *self.params]

    def __repr__(self) -> str:
        return f"ApiError({self.description()!r})"


def handle_invalid(cls: str, ref: str) -> ApiError:
    return ApiError("HANDLE_INVALID", cls, ref)


def internal_error(text: str) -> ApiError:
    return ApiError("INTERNAL_ERROR", text)
