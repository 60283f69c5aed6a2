"""Messages (alerts) with the XenAPI SDK over real sockets: create, read, get_since,
destroy, and their events (tracked by the second half of the event token)."""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Iterator
from typing import Any

import pytest
import XenAPI  # type: ignore[import-untyped]

from tests.e2e.test_events_sdk import close, event_from, login
from tests.serverproc import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed file <_io.TextIOWrapper:ResourceWarning"),
]

EPOCH = xmlrpc.client.DateTime("19700101T00:00:00Z")


@pytest.fixture
def x(server: ServerProcess) -> Iterator[Any]:
    session = login(server.http_url, "e2e-messages")
    yield session.xenapi
    close(session)


def test_create_read_since_and_destroy(x: Any) -> None:
    pool = x.pool.get_all()[0]
    pool_uuid = x.pool.get_uuid(pool)
    host_uuid = x.host.get_uuid(x.host.get_all()[0])
    token = event_from(x, ["message"], "", 0.0)["token"]

    first = x.message.create("POOL_NOTE", "3", "Pool", pool_uuid, "about the pool")
    second = x.message.create("HOST_NOTE", "5", "Host", host_uuid, "about the host")
    rec = x.message.get_record(first)
    assert rec["name"] == "POOL_NOTE" and rec["priority"] == "3" and rec["cls"] == "Pool"
    assert rec["obj_uuid"] == pool_uuid and rec["body"] == "about the pool"
    assert isinstance(rec["timestamp"], xmlrpc.client.DateTime)
    assert x.message.get_by_uuid(rec["uuid"]) == first
    since = x.message.get_since(EPOCH)
    assert first in since and second in since
    about_pool = x.message.get("Pool", pool_uuid, EPOCH)
    assert first in about_pool and second not in about_pool
    assert set(x.message.get_all_records()) >= {first, second}
    where = x.message.get_all_records_where('field "name"="HOST_NOTE"')
    assert list(where) == [second]

    reply = event_from(x, ["message"], token, 5.0)
    adds = {e["ref"]: e for e in reply["events"] if e["operation"] == "add"}
    assert {first, second} <= set(adds)
    assert adds[first]["snapshot"] == rec
    assert reply["token"].split(",")[1] > token.split(",")[1]

    x.message.destroy(first)
    assert first not in x.message.get_all()
    gone = event_from(x, ["message"], reply["token"], 5.0)
    assert [(e["operation"], e["ref"]) for e in gone["events"]] == [("del", first)]
    with pytest.raises(XenAPI.Failure) as e:
        x.message.get_record(first)
    assert e.value.details == ["HANDLE_INVALID", "message", first]
    x.message.destroy(second)


def test_create_refuses_unknown_objects(x: Any) -> None:
    with pytest.raises(XenAPI.Failure) as e:
        x.message.create("X", "1", "VM", "no-such-uuid", "")
    assert e.value.details == ["UUID_INVALID", "VM", "no-such-uuid"]
