"""HTTP layer: an asyncio HTTP/1.1 server with longest-prefix routing, TLS and unix sockets."""

from openxapi.http.limits import Limits
from openxapi.http.message import BodyStream, Handler, Request, Response, text_response
from openxapi.http.router import Router
from openxapi.http.server import HttpServer

__all__ = [
    "BodyStream",
    "Handler",
    "HttpServer",
    "Limits",
    "Request",
    "Response",
    "Router",
    "text_response",
]
