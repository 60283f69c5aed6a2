"""A decomposition step between the floor and openxapi: openxapi's own HTTP server (parsing,
keep-alive, limits, routing, reply heads) with a handler that returns a fixed body, so no
RPC decoding, dispatch or encoding happens. Same options as canned.py; the body is the one
in the reply file.

    python bench/httponly.py --port P --reply FILE [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from openxapi.http.message import Request, Response
from openxapi.http.router import Router
from openxapi.http.server import HttpServer
from openxapi.server.rpc import XML_HEADERS


async def serve(port: int, body: bytes) -> None:
    async def fixed(_req: Request) -> Response:
        return Response(200, XML_HEADERS, body)

    router = Router()
    router.add("/", fixed, methods={"POST"})
    server = HttpServer(router)
    await server.start_tcp("127.0.0.1", port)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    print("httponly ready", flush=True)
    await done.wait()
    await server.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--reply", type=Path, required=True)
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    ns = ap.parse_args()
    body = ns.reply.read_bytes().split(b"\r\n\r\n", 1)[1]
    if ns.loop == "uvloop":
        import uvloop

        uvloop.run(serve(ns.port, body))
    else:
        asyncio.run(serve(ns.port, body))


if __name__ == "__main__":
    main()
