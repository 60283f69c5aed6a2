"""Xen Orchestra's npm ``xen-api`` client with its event watcher on, over JSON-RPC and
XML-RPC, against a real ``openxapi serve`` (driven by ``node/xapi_events.mjs``).

The client's whole connect sequence runs (event.inject, get_all_records of every type, the
event.from loop); it must see a change made by another client (the Python SDK), resolve
``callAsync`` through task events, get a failed task's error, pass a barrier (an event on the
pool) and see a message it made arrive as an event.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import XenAPI  # type: ignore[import-untyped]

from tests.e2e.test_xen_api_npm import NODE_DIR, find_node
from tests.serverproc import ROOT_PASSWORD, ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed file <_io.TextIOWrapper:ResourceWarning"),
]

SCRIPT = NODE_DIR / "xapi_events.mjs"
GIB = 1024**3


@pytest.fixture(scope="module")
def sdk(server: ServerProcess) -> Iterator[Any]:
    session = XenAPI.Session(server.http_url)
    session.xenapi.login_with_password("root", ROOT_PASSWORD, "1.0", "e2e-npm-events")
    yield session.xenapi
    session.xenapi.session.logout()
    session("close")()


def _vm(x: Any, label: str) -> str:
    args = {
        "name_label": label,
        "name_description": "",
        "user_version": "1",
        "is_a_template": False,
        "affinity": "OpaqueRef:NULL",
        "memory_static_max": str(GIB),
        "memory_dynamic_max": str(GIB),
        "memory_dynamic_min": str(GIB),
        "memory_static_min": str(GIB),
        "VCPUs_params": {},
        "VCPUs_max": "1",
        "VCPUs_at_startup": "1",
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart",
        "actions_after_crash": "restart",
        "PV_bootloader": "",
        "PV_kernel": "",
        "PV_ramdisk": "",
        "PV_args": "",
        "PV_bootloader_args": "",
        "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {},
        "platform": {},
        "PCI_bus": "",
        "other_config": {},
        "recommendations": "",
    }
    return str(x.VM.create(args))


class NodeClient:
    """The node driver as a child process speaking JSON lines."""

    def __init__(self, node: str, url: str, transport: str) -> None:
        self.proc = subprocess.Popen(
            [node, str(SCRIPT), url, transport],
            cwd=NODE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not box or not box[0]:
            self.close()
            raise AssertionError("node said nothing:\n" + "".join(self.stderr))
        out: dict[str, Any] = json.loads(box[0])
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("transport", ["json-rpc", "xml-rpc"])
def test_the_event_watcher_follows_the_server(
    server: ServerProcess, sdk: Any, transport: str
) -> None:
    node = find_node()
    vm = _vm(sdk, f"watched-{transport}")
    ((pool_ref, pool),) = sdk.pool.get_all_records().items()
    client = NodeClient(node, server.http_url, transport)
    try:
        client.send({"user": "root", "password": ROOT_PASSWORD, "vm": vm, "poolUuid": pool["uuid"]})
        ready = client.receive()
        assert ready["phase"] == "ready", ready
        calls = ready["calls"]
        # The connect sequence: inject first, then every type's records, then event.from.
        inject = calls.index("event.inject")
        fetched = {
            c.removesuffix(".get_all_records")
            for c in calls[inject:]
            if c.endswith(".get_all_records")
        }
        assert fetched == set(ready["types"]), set(ready["types"]) ^ fetched
        assert ready["counts"]["VM"] == len(sdk.VM.get_all())
        assert ready["counts"].get("host") == len(sdk.host.get_all())

        label = f"renamed by python ({transport})"
        sdk.VM.set_name_label(vm, label)
        client.send({"expect": label})
        done = client.receive()
        assert done["phase"] == "done"
        assert "error" not in done, done.get("error")
        assert done["renameSeenAfterMs"] < 5000
        assert done["calls"].count("event.from") >= 2
        assert "Async.VM.clone" in done["calls"]
        assert done["cloneLabel"] == f"npm-clone-{transport}"
        assert sdk.VM.get_name_label(done["clone"]) == f"npm-clone-{transport}"
        failed = done["failedCall"]
        assert failed["code"] == "HANDLE_INVALID", failed
        assert failed["params"] == ["VM", "OpaqueRef:no-such-vm"]
        assert done["barrier"] is True
        assert done["message"]["name"] == "NPM_TEST"
        assert sdk.message.get_record(done["message"]["ref"])["body"] == "hello"
        assert done["watchEventsError"] is None
        # The client destroys its Async tasks once they settle.
        assert "task.destroy" in done["calls"]
        assert pool_ref == sdk.pool.get_all()[0]
    finally:
        client.close()
