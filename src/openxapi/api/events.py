"""The event hub: ``event.from`` and the legacy ``event.register`` / ``next`` over the store.

How it works:

- **Durable before visible.** The hub listens to the store's commits (``Store.on_commit``),
  not to its writes: a change is shown only once its generation is committed, and a snapshot
  only when the object has no newer write still on its way to disk. An object whose newest
  write is not yet durable is held back; when it was created since the caller's token, the
  returned token stops just before that creation, so the next call still reports an ``add``.
- **Tokens** are ``"%020d,%020d"``: the generation up to which objects were examined, then the
  same for messages (alerts). Generations are persisted and never reused, so a token survives
  a restart. Since a token, the in-memory change log gives exact add / mod / del per object;
  when the log no longer reaches back (after a restart), tables are scanned by each object's
  last-write generation and deletions come from the store's tombstones (changed objects are
  then reported as ``mod``). A token older than the oldest kept tombstone answers EVENTS_LOST.
- **Coalescing** per object since the token (core-api §5.3): one ``add`` for an object
  created since, one ``mod`` for one only modified, one ``del`` for one deleted, nothing for
  one both created and deleted. Order: messages, adds, mods, dels, each newest first.
- **Waiting.** A call with nothing to report parks a waiter indexed by the classes and refs it
  watches; a commit wakes only the waiters whose subscriptions it touches, each recomputes
  its answer (identical calls share one encoded reply), and nothing polls. Waiters end with
  SESSION_INVALID when their session is destroyed, and are dropped when their client leaves.
- **Legacy** ``event.next``: per registered session a bounded queue of committed changes,
  not coalesced; an overflow is reported once as EVENTS_LOST.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from openxapi.api.context import CallContext
from openxapi.api.state import ServerState
from openxapi.errors import ApiError
from openxapi.spec.values import Int32
from openxapi.wire import Preencoded

#: Stored classes the reference generates no events for (datamodel ``gen_events=false``).
EVENTLESS = frozenset({"session", "user", "secret"})
#: Alerts: stored like the rest, but tracked by the second half of a token.
MESSAGE = "message"
#: A timeout that cannot be a time span (negative, NaN, too large) waits this long.
DEFAULT_TIMEOUT = 86_400.0
_MAX_TIMEOUT = 9.2e9
#: Changes a legacy (event.next) registration may hold before some are dropped.
LEGACY_QUEUE_LIMIT = 10_000
_REPLY_CACHE_LIMIT = 256
_REPLY_CACHE_MAX_BYTES = 1 << 20
_FULL_SYNC_RETRIES = 3
#: What a call returns once its reply went out directly (the transport drops it).
ANSWERED = Preencoded(b"", b"")
_TOKEN_PART = re.compile(r"[+-]?[0-9]+")
_INT64_MAX = (1 << 63) - 1


# ---------------------------------------------------------------------------- subscriptions


@dataclass(frozen=True, slots=True)
class Subscription:
    """What a caller watches: everything, whole classes, or single objects (lowercase)."""

    everything: bool
    classes: frozenset[str]
    objects: frozenset[tuple[str, str]]

    @classmethod
    def parse(cls, specs: Iterable[str]) -> Subscription:
        """``*``, ``class`` or ``class/ref``, class names case-insensitive."""
        everything = False
        classes: set[str] = set()
        objects: set[tuple[str, str]] = set()
        for spec in specs:
            if spec == "*":
                everything = True
                continue
            name, slash, ref = spec.partition("/")
            if not slash:
                classes.add(name.lower())
            else:
                objects.add((name.lower(), ref))
        return cls(everything, frozenset(classes), frozenset(objects))

    def matches(self, lcls: str, ref: str) -> bool:
        return self.everything or lcls in self.classes or (lcls, ref) in self.objects

    def covers(self, lcls: str) -> bool:
        """Whether some object of this class could match."""
        return self.everything or lcls in self.classes or any(c == lcls for c, _ in self.objects)

    def covers_objects(self) -> bool:
        """Whether it watches anything besides messages."""
        return (
            self.everything
            or any(c != MESSAGE for c in self.classes)
            or any(c != MESSAGE for c, _ in self.objects)
        )

    def refs_of(self, lcls: str) -> list[str]:
        """The single objects of this class the subscription names."""
        return [r for c, r in self.objects if c == lcls]


#: Parsed subscriptions by their spec lists: watchers that ask the same thing share one
#: object, so the replies of a wake-up are looked up by identity.
_PARSED: dict[tuple[str, ...], Subscription] = {}
_PARSED_LIMIT = 1024


def parse_subscriptions(specs: list[str]) -> Subscription:
    """EVENT_SUBSCRIPTION_PARSE_FAILURE [spec] for a subscription without a class name
    (``""``, ``"/ref"``), which could never match anything."""
    key = tuple(specs)
    known = _PARSED.get(key)
    if known is not None:
        return known
    for spec in specs:
        if spec != "*" and not spec.partition("/")[0]:
            raise ApiError("EVENT_SUBSCRIPTION_PARSE_FAILURE", spec)
    sub = Subscription.parse(specs)
    if len(_PARSED) >= _PARSED_LIMIT:
        _PARSED.clear()
    _PARSED[key] = sub
    return sub


# ---------------------------------------------------------------------------- tokens


def parse_token(token: str) -> tuple[int, int]:
    """``""`` is the beginning; otherwise two integers joined by a comma."""
    if token == "":
        return 0, 0
    parts = token.split(",")
    if len(parts) != 2 or not all(_TOKEN_PART.fullmatch(p) for p in parts):
        raise ApiError("EVENT_FROM_TOKEN_PARSE_FAILURE", token)
    a, b = int(parts[0]), int(parts[1])
    if abs(a) > _INT64_MAX or abs(b) > _INT64_MAX:
        raise ApiError("EVENT_FROM_TOKEN_PARSE_FAILURE", token)
    return max(a, 0), max(b, 0)


def format_token(objects: int, messages: int) -> str:
    """Zero-padded, so tokens compare as strings."""
    return f"{objects:020d},{messages:020d}"


def timeout_seconds(timeout: float) -> float:
    """The reference's reading of event.from's timeout."""
    if math.isnan(timeout) or timeout < 0 or timeout > _MAX_TIMEOUT:
        return DEFAULT_TIMEOUT
    return timeout


def trackid(session: str) -> str:
    """How the reference names a session in errors without showing its ref."""
    return "trackid=" + hashlib.md5(session.encode(), usedforsecurity=False).hexdigest()


# ---------------------------------------------------------------------------- encoding

_XML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})

# (generation, operation, lowercase class, stored class, ref)
_Event = tuple[int, str, str, str, str]


def _xml_event(ev: _Event, snapshot: bytes | None) -> bytes:
    gen, op, lcls, _, ref = ev
    head = (
        f"<value><struct><member><name>id</name><value>{gen}</value></member>"
        "<member><name>timestamp</name><value>0.0</value></member>"
        f"<member><name>class</name><value>{lcls}</value></member>"
        f"<member><name>operation</name><value>{op}</value></member>"
        f"<member><name>ref</name><value>{ref.translate(_XML_ESCAPES)}</value></member>"
    ).encode()
    if snapshot is None:
        return head + b"</struct></value>"
    return head + b"<member><name>snapshot</name>" + snapshot + b"</member></struct></value>"


def _json_event(ev: _Event, snapshot: bytes | None) -> bytes:
    gen, op, lcls, _, ref = ev
    head = (
        f'{{"id":"{gen}","timestamp":"0.0","class":"{lcls}","operation":"{op}","ref":'
    ).encode() + orjson.dumps(ref)
    if snapshot is None:
        return head + b"}"
    return head + b',"snapshot":' + snapshot + b"}"


# ---------------------------------------------------------------------------- waiters


@dataclass(eq=False, slots=True)
class _Waiter:
    """One blocked call: woken by a matching commit, its session's end or its timeout."""

    session: str
    sub: Subscription
    future: asyncio.Future[None]
    # Where the call's next look at the changes starts, and how to answer it directly.
    objects_from: int = 0
    messages_from: int = 0
    codec: str = "xml"
    answer_now: Callable[[Any], bool] | None = None
    answered: bool = False


@dataclass(eq=False, slots=True)
class _Registration:
    """A session's legacy (event.next) subscription and the changes queued for it."""

    specs: list[str] = field(default_factory=list)
    sub: Subscription = field(default_factory=lambda: Subscription(False, frozenset(), frozenset()))
    queue: deque[tuple[int, int, str, str, str, float]] = field(default_factory=deque)
    lost: bool = False
    waiter: asyncio.Future[None] | None = None


@dataclass(slots=True)
class _Collected:
    reply: Preencoded
    objects_token: int
    messages_token: int
    found: bool


class EventHub:
    """Delivers committed changes to event.from / event.next callers. One per server."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.store = store = state.store
        self.lower: dict[str, str] = {c: c.lower() for c in store.classes() if c not in EVENTLESS}
        self.real: dict[str, str] = {lc: c for c, lc in self.lower.items()}
        self._counted = [(c.lower(), c) for c in store.classes() if c != MESSAGE]
        self._counted_names = [lc for lc, _ in self._counted]
        self._tables = [store.table(c) for _, c in self._counted]
        self._counts_cache: dict[str, tuple[tuple[int, ...], bytes]] = {}
        self._all: set[_Waiter] = set()
        self._by_class: dict[str, set[_Waiter]] = {}
        self._by_ref: dict[str, set[_Waiter]] = {}
        self._by_session: dict[str, set[_Waiter]] = {}
        self._legacy: dict[str, _Registration] = {}
        self.current_id = 0
        self._announced = store.committed
        self._replies: dict[tuple[Any, ...], _Collected] = {}
        self._closing = False
        self._unsubscribe = store.on_commit(self._on_commit)
        state.extras["session_closed"] = self.session_closed
        state.extras["events"] = self

    def close(self) -> None:
        """Stop listening to the store (tests that build several hubs on one store)."""
        self._unsubscribe()

    def release_all(self) -> None:
        """Server shutdown: blocked event.from calls answer with what they have, event.next
        calls are dropped, and no call waits any more."""
        self._closing = True
        for group in list(self._by_session.values()):
            for w in list(group):
                _resolve(w.future)
        for reg in self._legacy.values():
            if reg.waiter is not None:
                reg.waiter.cancel()

    # ------------------------------------------------------------------ event.from

    async def event_from(
        self, ctx: CallContext, classes: list[str], token: str, timeout: float
    ) -> Preencoded:
        """The events since ``token`` for ``classes``, waiting up to ``timeout`` seconds."""
        sub = parse_subscriptions(classes)
        objects_from, messages_from = parse_token(token)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds(timeout)
        if (objects_from == 0 and sub.covers_objects()) or (
            messages_from == 0 and sub.covers(MESSAGE)
        ):
            await self._settle_for_full_sync()
        while True:
            got = self._collect(sub, objects_from, messages_from, ctx.codec)
            if got.found or loop.time() >= deadline or self._closing:
                return got.reply
            objects_from, messages_from = got.objects_token, got.messages_token
            if await self._wait(ctx, sub, deadline, objects_from, messages_from):
                return ANSWERED

    async def _settle_for_full_sync(self) -> None:
        """A full listing shows objects whose newest write is durable: let what is on its
        way to disk land first, so few are held back."""
        store = self.store
        for _ in range(_FULL_SYNC_RETRIES):
            if store.committed >= store.generation:
                return
            await store.sync()

    async def _wait(
        self,
        ctx: CallContext,
        sub: Subscription,
        deadline: float,
        objects_from: int,
        messages_from: int,
    ) -> bool:
        """Park until woken; True when the waking code has already sent the reply."""
        if ctx.session and self.store.get("session", ctx.session) is None:
            raise ApiError("SESSION_INVALID", ctx.session)  # closed while we were busy
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        waiter = _Waiter(
            ctx.session, sub, fut, objects_from, messages_from, ctx.codec, ctx.answer_now
        )
        self._park(waiter)
        timer = loop.call_at(deadline, _resolve, fut)
        remove_gone = ctx.peer_gone(_canceller(fut)) if ctx.peer_gone is not None else None
        try:
            await fut
        finally:
            timer.cancel()
            if remove_gone is not None:
                remove_gone()
            self._unpark(waiter)
        return waiter.answered

    def _park(self, w: _Waiter) -> None:
        sub = w.sub
        if sub.everything:
            self._all.add(w)
        for c in sub.classes:
            self._by_class.setdefault(c, set()).add(w)
        for _, ref in sub.objects:
            self._by_ref.setdefault(ref, set()).add(w)
        self._by_session.setdefault(w.session, set()).add(w)

    def _unpark(self, w: _Waiter) -> None:
        self._all.discard(w)
        for c in w.sub.classes:
            _discard(self._by_class, c, w)
        for _, ref in w.sub.objects:
            _discard(self._by_ref, ref, w)
        _discard(self._by_session, w.session, w)

    @property
    def waiting(self) -> int:
        """How many event.from calls are blocked right now."""
        return sum(len(s) for s in self._by_session.values())

    # ------------------------------------------------------------------ computing replies

    def _collect(self, sub: Subscription, t_obj: int, t_msg: int, codec: str) -> _Collected:
        committed = self.store.committed
        key = (sub, t_obj, t_msg, codec, committed)
        hit = self._replies.get(key)
        if hit is not None:
            return hit
        events, next_obj, next_msg = self._changes(sub, t_obj, t_msg, committed)
        reply = self._encode(events, format_token(next_obj, next_msg), codec)
        got = _Collected(reply, next_obj, next_msg, bool(events))
        if len(reply.xml) + len(reply.json) <= _REPLY_CACHE_MAX_BYTES:
            # Kept until the next commit: what identical waiters woken together share. A
            # full listing is too big to keep around for a call that may never repeat.
            if len(self._replies) >= _REPLY_CACHE_LIMIT:
                self._replies.clear()
            self._replies[key] = got
        return got

    def _changes(
        self, sub: Subscription, t_obj: int, t_msg: int, committed: int
    ) -> tuple[list[tuple[_Event, dict[str, Any] | None]], int, int]:
        """The coalesced events and the next token halves. Objects whose newest write is not
        yet durable are held back (and the token stops before their creation)."""
        store = self.store
        wants_objects = sub.covers_objects()
        wants_messages = sub.covers(MESSAGE)
        # A half the subscription does not look at stays where it was, as the reference's.
        next_obj = max(t_obj, committed) if wants_objects else t_obj
        next_msg = max(t_msg, committed) if wants_messages else t_msg
        adds: list[tuple[_Event, dict[str, Any] | None]] = []
        mods: list[tuple[_Event, dict[str, Any] | None]] = []
        dels: list[tuple[_Event, dict[str, Any] | None]] = []
        msgs: list[tuple[_Event, dict[str, Any] | None]] = []
        log_from: int | None = None
        log_obj = wants_objects and t_obj > 0
        log_msg = wants_messages and t_msg > 0
        if log_obj or log_msg:
            since = min(t for t, used in ((t_obj, log_obj), (t_msg, log_msg)) if used)
            changes, complete = store.changes_since(since)
            if complete:
                log_from = since
            else:
                changes = []
        else:
            changes = []
        if wants_objects:
            if t_obj == 0:
                self._full(sub, committed, adds, messages=False)
            elif log_from is None:
                self._scan(sub, t_obj, committed, mods, dels)
        if wants_messages:
            if t_msg == 0:
                self._full(sub, committed, msgs, messages=True)
            elif log_from is None:
                self._scan_messages(sub, t_msg, committed, msgs)
        if log_from is not None:
            first: dict[str, tuple[int, str]] = {}
            last: dict[str, tuple[int, str, str]] = {}
            lower = self.lower
            for ch in changes:
                gen = ch.generation
                if gen > committed:
                    break
                cls = ch.cls
                if cls == MESSAGE:
                    if not log_msg or gen <= t_msg:
                        continue
                elif not log_obj or gen <= t_obj:
                    continue
                lcls = lower.get(cls)
                if lcls is None or not sub.matches(lcls, ch.ref):
                    continue
                ref = ch.ref
                if ref not in first:
                    first[ref] = (gen, ch.op)
                last[ref] = (gen, ch.op, cls)
            version = store.version
            for ref, (lgen, lop, cls) in last.items():
                fgen, fop = first[ref]
                lcls = lower[cls]
                is_msg = cls == MESSAGE
                if lop == "del":
                    if fop != "add":
                        (msgs if is_msg else dels).append(((lgen, "del", lcls, cls, ref), None))
                    continue
                rec = store.get(cls, ref)
                if rec is None or version(ref) > committed:
                    if fop == "add":
                        if is_msg:
                            next_msg = min(next_msg, fgen - 1)
                        else:
                            next_obj = min(next_obj, fgen - 1)
                    continue
                if is_msg:
                    msgs.append(((fgen, "add", lcls, cls, ref), rec))
                elif fop == "add":
                    adds.append(((fgen, "add", lcls, cls, ref), rec))
                else:
                    mods.append(((lgen, "mod", lcls, cls, ref), rec))
        out: list[tuple[_Event, dict[str, Any] | None]] = []
        for group in (msgs, adds, mods, dels):
            group.sort(key=lambda e: e[0][0], reverse=True)
            out += group
        return out, max(next_obj, t_obj), max(next_msg, t_msg)

    def _scope(self, sub: Subscription, messages: bool) -> tuple[list[str], list[tuple[str, str]]]:
        """Stored classes to list wholly, and single (class, ref) objects, for a scan."""
        whole: list[str] = []
        single: list[tuple[str, str]] = []
        for lcls, cls in self.real.items():
            if (cls == MESSAGE) != messages:
                continue
            if sub.everything or lcls in sub.classes:
                whole.append(cls)
            else:
                single += [(cls, r) for r in sub.refs_of(lcls)]
        return whole, single

    def _full(
        self,
        sub: Subscription,
        committed: int,
        out: list[tuple[_Event, dict[str, Any] | None]],
        *,
        messages: bool,
    ) -> None:
        """An ``add`` for every durable object in scope (an empty token)."""
        store = self.store
        version = store.version
        whole, single = self._scope(sub, messages)
        for cls in whole:
            lcls = self.lower[cls]
            for ref, rec in store.table(cls).items():
                v = version(ref)
                if v > committed:
                    continue
                out.append(((v, "add", lcls, cls, ref), rec))
        for cls, ref in single:
            one = store.get(cls, ref)
            if one is None:
                continue
            v = version(ref)
            if v > committed:
                continue
            out.append(((v, "add", self.lower[cls], cls, ref), one))

    def _scan(
        self,
        sub: Subscription,
        since: int,
        committed: int,
        mods: list[tuple[_Event, dict[str, Any] | None]],
        dels: list[tuple[_Event, dict[str, Any] | None]],
    ) -> None:
        """Changes since a token the change log no longer reaches (e.g. before a restart)."""
        store = self.store
        if since < store.tombstone_floor:
            raise ApiError("EVENTS_LOST")
        version = store.version
        created = store.created
        whole, single = self._scope(sub, messages=False)
        for cls in whole:
            lcls = self.lower[cls]
            for ref, rec in store.table(cls).items():
                v = version(ref)
                if v <= since:
                    continue
                if v > committed:
                    continue
                op = "add" if created(ref) > since else "mod"
                mods.append(((v, op, lcls, cls, ref), rec))
        for cls, ref in single:
            one = store.get(cls, ref)
            v = version(ref)
            if one is None or v <= since:
                continue
            if v > committed:
                continue
            op = "add" if created(ref) > since else "mod"
            mods.append(((v, op, self.lower[cls], cls, ref), one))
        for cls, ref, gen in store.deleted_since(since):
            lowered = self.lower.get(cls)
            if gen > committed or lowered is None or cls == MESSAGE:
                continue
            if sub.matches(lowered, ref):
                dels.append(((gen, "del", lowered, cls, ref), None))

    def _scan_messages(
        self,
        sub: Subscription,
        since: int,
        committed: int,
        out: list[tuple[_Event, dict[str, Any] | None]],
    ) -> None:
        store = self.store
        if since < store.tombstone_floor:
            raise ApiError("EVENTS_LOST")
        version = store.version
        for ref, rec in store.table(MESSAGE).items():
            if not sub.matches(MESSAGE, ref):
                continue
            v = version(ref)
            if v <= since:
                continue
            if v > committed:
                continue
            out.append(((v, "add", MESSAGE, MESSAGE, ref), rec))
        for cls, ref, gen in store.deleted_since(since):
            if cls == MESSAGE and gen <= committed and sub.matches(MESSAGE, ref):
                out.append(((gen, "del", MESSAGE, MESSAGE, ref), None))

    def _encode(
        self, events: list[tuple[_Event, dict[str, Any] | None]], token: str, codec: str
    ) -> Preencoded:
        encoded = self.state.cache.encoded
        counts = self._counts()
        if codec == "json":
            parts = []
            for ev, rec in events:
                snap = None if rec is None else encoded(ev[4], rec, "json").json
                parts.append(_json_event(ev, snap))
            body = (
                b'{"events":['
                + b",".join(parts)
                + b'],"valid_ref_counts":{'
                + self._counts_encoded(counts, "json")
                + b'},"token":"'
                + token.encode()
                + b'"}'
            )
            return Preencoded(b"", body)
        xparts = [b"<value><struct><member><name>events</name><value><array><data>"]
        for ev, rec in events:
            snap = None if rec is None else encoded(ev[4], rec, "xml").xml
            xparts.append(_xml_event(ev, snap))
        xparts.append(
            b"</data></array></value></member><member><name>valid_ref_counts</name>"
            b"<value><struct>"
            + self._counts_encoded(counts, "xml")
            + b"</struct></value></member>"
            + f"<member><name>token</name><value>{token}</value></member>".encode()
            + b"</struct></value>"
        )
        return Preencoded(b"".join(xparts), b"")

    def _counts(self) -> tuple[int, ...]:
        """Objects per stored table (messages aside), in the order of ``_counted``."""
        return tuple(map(len, self._tables))

    def _counts_encoded(self, counts: tuple[int, ...], codec: str) -> bytes:
        """The valid_ref_counts members, encoded once per set of table sizes."""
        cached = self._counts_cache.get(codec)
        if cached is not None and cached[0] == counts:
            return cached[1]
        pairs = zip(self._counted_names, counts, strict=True)
        if codec == "json":
            data = ",".join(f'"{c}":{n}' for c, n in pairs).encode()
        else:
            data = "".join(
                f"<member><name>{c}</name><value><i4>{n}</i4></value></member>" for c, n in pairs
            ).encode()
        self._counts_cache[codec] = (counts, data)
        return data

    def valid_ref_counts(self) -> dict[str, Int32]:
        """Objects per stored table, as event.from reports them."""
        return {lcls: Int32(len(self.store.table(cls))) for lcls, cls in self._counted}

    # ------------------------------------------------------------------ commits

    def _on_commit(self, committed: int) -> None:
        changes, complete = self.store.changes_since(self._announced)
        self._announced = committed
        self._replies.clear()
        if not (self._by_session or self._legacy):
            return
        if not complete:
            for group in self._by_session.values():
                for w in group:
                    _resolve(w.future)
            for reg in self._legacy.values():
                reg.lost = True
                _wake_legacy(reg)
            return
        lower = self.lower
        classes: set[str] = set()
        refs: set[str] = set()
        watch_refs = bool(self._by_ref)
        legacy = self._legacy
        stamp = time.time()
        for ch in changes:
            if ch.generation > committed:
                break
            lcls = lower.get(ch.cls)
            if lcls is None:
                continue
            classes.add(lcls)
            if watch_refs:
                refs.add(ch.ref)
            if legacy:
                self._queue_legacy(ch.generation, lcls, ch.cls, ch.ref, ch.op, stamp)
        if classes:
            # Woken on the next turn of the loop, so the writers whose commit this is get
            # their answers before a crowd of watchers is served.
            try:
                asyncio.get_running_loop().call_soon(self._wake, classes, refs)
            except RuntimeError:  # no loop (a store used offline): nobody can be waiting
                self._wake(classes, refs)

    def _wake(self, classes: set[str], refs: set[str]) -> None:
        woken: dict[_Waiter, None] = dict.fromkeys(self._all)
        for lcls in classes:
            woken.update(dict.fromkeys(self._by_class.get(lcls, ())))
        for ref in refs:
            woken.update(dict.fromkeys(self._by_ref.get(ref, ())))
        # Every reply goes out before any woken call resumes: the replies of waiters that
        # asked the same thing are computed once and sent straight to their connections,
        # and the calls then only unwind.
        last: _Waiter | None = None
        got: _Collected | None = None
        for w in woken:
            if w.answer_now is not None and not w.future.done():
                if (
                    got is None
                    or last is None
                    or w.sub is not last.sub
                    or w.objects_from != last.objects_from
                    or w.messages_from != last.messages_from
                    or w.codec != last.codec
                ):
                    try:
                        got = self._collect(w.sub, w.objects_from, w.messages_from, w.codec)
                    except ApiError:
                        got = None
                        continue  # the call itself raises it when it resumes
                    last = w
                if got.found and w.answer_now(got.reply):
                    w.answered = True
        for w in woken:
            _resolve(w.future)

    def session_closed(self, session: str) -> None:
        """The session is gone: its blocked calls end with SESSION_INVALID."""
        for w in list(self._by_session.get(session, ())):
            if not w.future.done():
                w.future.set_exception(ApiError("SESSION_INVALID", session))
        reg = self._legacy.pop(session, None)
        if reg is not None and reg.waiter is not None and not reg.waiter.done():
            reg.waiter.set_exception(ApiError("SESSION_INVALID", session))

    # ------------------------------------------------------------------ legacy event.next

    def register(self, session: str, classes: list[str]) -> None:
        """Add to the session's event.next subscription (creating it)."""
        parse_subscriptions(classes)
        reg = self._legacy.get(session)
        if reg is None:
            reg = self._legacy[session] = _Registration()
        reg.specs = [*classes, *reg.specs]
        reg.sub = Subscription.parse(reg.specs)

    def unregister(self, session: str, classes: list[str]) -> None:
        """Remove subscriptions (the reference creates an empty registration if none)."""
        gone = parse_subscriptions(classes)
        reg = self._legacy.get(session)
        if reg is None:
            reg = self._legacy[session] = _Registration()
        reg.specs = [s for s in reg.specs if not _same_subscription(Subscription.parse([s]), gone)]
        reg.sub = Subscription.parse(reg.specs)

    def _queue_legacy(self, gen: int, lcls: str, cls: str, ref: str, op: str, stamp: float) -> None:
        counted = False
        for reg in self._legacy.values():
            if not reg.sub.matches(lcls, ref):
                continue
            if not counted:
                self.current_id += 1
                counted = True
            queue = reg.queue
            queue.append((self.current_id, gen, cls, ref, op, stamp))
            if len(queue) > LEGACY_QUEUE_LIMIT:
                queue.popleft()
                reg.lost = True
            _wake_legacy(reg)

    async def next(self, ctx: CallContext) -> list[dict[str, Any]]:
        """The queued events of the session's subscription, waiting for at least one."""
        session = ctx.session
        reg = self._legacy.get(session)
        if reg is None:
            raise ApiError("SESSION_NOT_REGISTERED", trackid(session))
        while True:
            if reg.lost:
                reg.lost = False
                reg.queue.clear()
                raise ApiError("EVENTS_LOST")
            if reg.queue:
                entries = list(reg.queue)
                reg.queue.clear()
                relevant = [e for e in entries if reg.sub.matches(self.lower[e[2]], e[3])]
                if relevant:
                    return await self._legacy_records(relevant, ctx.codec)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            reg.waiter = fut
            remove_gone = ctx.peer_gone(_canceller(fut)) if ctx.peer_gone is not None else None
            try:
                await fut
            finally:
                reg.waiter = None
                if remove_gone is not None:
                    remove_gone()
            if self._legacy.get(session) is not reg:
                raise ApiError("SESSION_INVALID", session)

    async def _legacy_records(
        self, entries: list[tuple[int, int, str, str, str, float]], codec: str
    ) -> list[dict[str, Any]]:
        store = self.store
        for _ in range(_FULL_SYNC_RETRIES):
            if all(store.version(e[3]) <= store.committed for e in entries):
                break
            await store.sync()
        encoded = self.state.cache.encoded
        out = []
        for ev_id, _, cls, ref, op, stamp in entries:
            record: dict[str, Any] = {
                "id": str(ev_id),
                "timestamp": f"{int(stamp)}.",
                "class": self.lower[cls],
                "operation": op,
                "ref": ref,
            }
            rec = store.get(cls, ref)
            if op != "del" and rec is not None and store.version(ref) <= store.committed:
                record["snapshot"] = encoded(ref, rec, codec)
            out.append(record)
        return out

    # ------------------------------------------------------------------ event.inject

    async def inject(self, cls: str, ref: str) -> str:
        """Touch an object (watchers see a ``mod``); the token just before that change."""
        store = self.store
        actual = store.class_of(ref)
        if actual is None or actual != cls or actual == MESSAGE:
            raise ApiError("HANDLE_INVALID", cls, ref)
        gen = store.touch(actual, ref)
        await store.sync()
        return format_token(gen - 1, 0)


def _canceller(fut: asyncio.Future[None]) -> Callable[[], None]:
    def cancel() -> None:
        fut.cancel()

    return cancel


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _wake_legacy(reg: _Registration) -> None:
    if reg.waiter is not None:
        _resolve(reg.waiter)


def _discard(index: dict[str, set[_Waiter]], key: str, w: _Waiter) -> None:
    group = index.get(key)
    if group is not None:
        group.discard(w)
        if not group:
            del index[key]


def _same_subscription(one: Subscription, other: Subscription) -> bool:
    """Whether ``one`` (a single spec) is among the specs of ``other``."""
    if one.everything:
        return other.everything
    return bool(one.classes & other.classes or one.objects & other.objects)


def events_of(state: ServerState) -> EventHub:
    """The server's hub (built with the dispatcher)."""
    hub = state.extras.get("events")
    if not isinstance(hub, EventHub):
        hub = EventHub(state)
    return hub
