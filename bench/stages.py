"""Diagnostic: CPU cost of each stage of a call, measured in-process on a real server state
(thread CPU time of the event-loop thread, so a busy machine does not inflate it). It says
where the time of benchmarks 1 and 3 goes; nothing here has a target.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import tempfile
import time
import xmlrpc.client
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, cast

import vmrecords
from fixtures import Fixtures
from harness import free_port
from report import Row, Section

from openxapi.api.context import CallContext
from openxapi.config import Config
from openxapi.http.message import Request
from openxapi.server.app import App
from openxapi.wire import jsonrpc as wire_json
from openxapi.wire import xmlrpc as wire_xml

_CTX = mp.get_context("fork")
N = 3000


def _cpu_us(fn: Callable[[], object], n: int = N) -> float:
    t0 = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - t0) / n * 1e6


async def _acpu_us(fn: Callable[[], Any], n: int = N) -> float:
    t0 = time.thread_time()
    for _ in range(n):
        await fn()
    return (time.thread_time() - t0) / n * 1e6


async def _writes(
    data: Path, durable: bool, writers: int, n: int = N
) -> tuple[float, float, float]:
    """(main-thread CPU us/write, writes/s, writes per commit) of VM.set_name_label
    dispatched in-process by ``writers`` concurrent coroutines: no HTTP, no XML."""
    cfg = Config(
        data_dir=data,
        listen="127.0.0.1",
        backend="simulator",
        http_port=free_port(),
        https_port=0,
        unix_socket=data / "s.sock",
        durable=durable,
    )
    app = App(cfg, root_password="stages-pw")
    await app.start()
    try:
        assert app._http is not None and app.state is not None
        route = app._http.router.resolve("POST", "/")
        assert route is not None
        dispatcher = cast(Any, route.handler).__self__.dispatcher
        ctx = CallContext(transport="http", peer="127.0.0.1", codec="xml")
        session = await dispatcher.call(
            "session.login_with_password", ["root", "stages-pw", "1.0", "stages"], ctx
        )
        vms = [
            await dispatcher.call(
                "VM.create", [session, vmrecords.create_args(f"s{i}", f"m{i}")], ctx
            )
            for i in range(writers)
        ]
        store = app.state.store
        await store.sync()
        b0 = store.batches_committed

        async def writer(w: int) -> None:
            for i in range(n // writers):
                await dispatcher.call("VM.set_name_label", [session, vms[w], f"n{i}"], ctx)

        t0, w0 = time.thread_time(), time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        cpu, wall = time.thread_time() - t0, time.perf_counter() - w0
        done = n // writers * writers
        batches = store.batches_committed - b0
        return cpu / done * 1e6, done / wall, done / batches if batches else float("nan")
    finally:
        await app.stop()


async def _measure(root: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    data = root / "stages"
    cfg = Config(
        data_dir=data,
        listen="127.0.0.1",
        backend="simulator",
        http_port=free_port(),
        https_port=0,
        unix_socket=data / "s.sock",
    )
    app = App(cfg, root_password="stages-pw")
    await app.start()
    try:
        assert app._http is not None and app.state is not None
        route = app._http.router.resolve("POST", "/")
        assert route is not None
        handler = route.handler
        dispatcher = cast(Any, handler).__self__.dispatcher
        ctx = CallContext(transport="http", peer="127.0.0.1", codec="xml")
        session = await dispatcher.call(
            "session.login_with_password", ["root", "stages-pw", "1.0", "stages"], ctx
        )
        host = app.state.host_ref
        body = xmlrpc.client.dumps((session, host), "host.get_record").encode()
        jbody = json.dumps(
            {"jsonrpc": "2.0", "method": "host.get_record", "params": [session, host], "id": 1}
        ).encode()
        name, params = wire_xml.decode_call(body)
        value = await dispatcher.call(name, params, ctx)
        req = Request("POST", "/", headers={"content-type": "text/xml"}, body=body)
        out["xml_decode"] = _cpu_us(lambda: wire_xml.decode_call(body))
        out["json_decode"] = _cpu_us(lambda: wire_json.decode_call(jbody))
        out["dispatch_get_record"] = await _acpu_us(lambda: dispatcher.call(name, params, ctx))
        out["xml_encode"] = _cpu_us(lambda: wire_xml.encode_success(value))
        out["rpc_endpoint"] = await _acpu_us(lambda: handler(req))
        out["request_bytes"] = len(body)
    finally:
        await app.stop()

    loop = asyncio.get_running_loop()
    probe = root / "hop.probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o600)

    def noop() -> None:
        pass

    def write_sync() -> None:
        os.pwrite(fd, b"x" * 4096, 0)
        os.fdatasync(fd)

    with ThreadPoolExecutor(1) as ex:
        for key, fn in (("hop_noop", noop), ("hop_fdatasync", write_sync)):
            await loop.run_in_executor(ex, fn)
            w0 = time.perf_counter()
            out[key] = await _acpu_us(partial(loop.run_in_executor, ex, fn), 1000)
            out[key + "_wall"] = (time.perf_counter() - w0) / 1000 * 1e6
    os.close(fd)
    probe.unlink()

    for durable in (False, True):
        for writers in (1, 8):
            kind = "durable" if durable else "memory"
            d = root / f"stages-{kind}-{writers}"
            cpu, rate, per = await _writes(d, durable, writers)
            out[f"write_{kind}_{writers}_cpu"] = cpu
            out[f"write_{kind}_{writers}_rate"] = rate
            out[f"write_{kind}_{writers}_per_commit"] = per
    return out


def _child(q: mp.SimpleQueue[Any], root: Path) -> None:
    try:
        try:
            import uvloop

            q.put(uvloop.run(_measure(root)))
        except ImportError:
            q.put(asyncio.run(_measure(root)))
    except BaseException as exc:
        q.put(exc)


def measure(root: Path) -> dict[str, float]:
    q: mp.SimpleQueue[Any] = _CTX.SimpleQueue()
    p = _CTX.Process(target=_child, args=(q, root))
    p.start()
    result = q.get()
    p.join()
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, dict)
    return result


def run(fx: Fixtures, _quick: bool) -> Section:
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=fx.root) as tmp:
        m = measure(Path(tmp))
    us = "{:.1f} us".format
    section = Section("Where the time goes: per-stage CPU, in-process (diagnostic)")
    section.rows += [
        Row(
            f"XML-RPC decode of host.get_record ({m['request_bytes']:.0f} bytes)",
            us(m["xml_decode"]),
        ),
        Row("JSON-RPC decode of the same call", us(m["json_decode"])),
        Row("dispatch host.get_record (checks, session, handler)", us(m["dispatch_get_record"])),
        Row("XML-RPC encode of the reply (cached record)", us(m["xml_encode"])),
        Row("RPC endpoint: decode + dispatch + encode", us(m["rpc_endpoint"])),
        Row(
            "thread hop run_in_executor, no-op: loop-thread CPU / wall",
            f"{m['hop_noop']:.0f} us / {m['hop_noop_wall']:.0f} us",
        ),
        Row(
            "thread hop with 4 KiB write + fdatasync: loop-thread CPU / wall",
            f"{m['hop_fdatasync']:.0f} us / {m['hop_fdatasync_wall']:.0f} us",
        ),
    ]
    for writers in (1, 8):
        mem, dur = f"write_memory_{writers}", f"write_durable_{writers}"
        section.rows.append(
            Row(
                f"VM.set_name_label dispatched in-process, {writers} writer(s): loop-thread CPU "
                "per write, writes/s (writes per commit)",
                f"{m[dur + '_cpu']:.0f} us, {m[dur + '_rate']:,.0f}/s "
                f"({m[dur + '_per_commit']:.1f})",
                f"{m[mem + '_cpu']:.0f} us, {m[mem + '_rate']:,.0f}/s (--no-durability)",
                f"{m[dur + '_rate'] / m[mem + '_rate']:.0%}",
            )
        )
    section.notes.append(
        f"{N} repetitions each; CPU is time.thread_time() of the event-loop thread (user + "
        "system), so the store's writer process is not in it"
    )
    section.data = m
    section.seconds = time.perf_counter() - t_start
    return section
