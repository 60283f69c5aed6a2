"""The messages the reference generates for every class, built from the description.

Getters, setters, map and set accessors, get_record / get_by_* / get_all*, the
where-expression queries, and the record constructor and destructor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openxapi.api.coerce import CoercionError, coerce
from openxapi.api.context import CallContext
from openxapi.api.registry import Handler
from openxapi.api.relations import Relations
from openxapi.api.state import ServerState, new_ref, new_uuid
from openxapi.db.where import UnknownColumnError, WhereSyntaxError, compile_for_class
from openxapi.errors import ApiError
from openxapi.spec import types as T
from openxapi.spec.model import NULL_REF, Api, Class, Field, Message

# Explicit (hand-declared) messages whose behaviour is exactly the generic accessor's.
GENERIC_EXPLICIT_FIELDS = frozenset(
    {
        "other_config",
        "platform",
        "blocked_operations",
        "tags",
        "xenstore_data",
        "logging",
        "gui_config",
        "health_check_config",
        "name_label",
        "name_description",
    }
)


def _copy(v: Any) -> Any:
    return v.copy() if isinstance(v, (dict, list)) else v


class Generic:
    """Builds the handler of every generated message of the description."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.relations = Relations(api)

    # ---- building -------------------------------------------------------------------
    def build(self) -> dict[str, Handler]:
        out: dict[str, Handler] = {}
        for cls in self.api.classes.values():
            if not cls.in_db:
                continue
            for msg in cls.messages.values():
                h = self._for(cls, msg)
                if h is not None:
                    out[msg.wire_name] = h
        return out

    def _for(self, cls: Class, msg: Message) -> Handler | None:
        name = msg.name
        if not msg.implicit:
            field = self._accessor_field(cls, name)
            if field is None or field.name not in GENERIC_EXPLICIT_FIELDS:
                return None
        simple: dict[str, Callable[[Class], Handler]] = {
            "get_record": self._get_record,
            "get_by_uuid": self._get_by_uuid,
            "get_by_name_label": self._get_by_name_label,
            "get_all": self._get_all,
            "get_all_records": self._get_all_records,
            "get_all_records_where": self._get_all_records_where,
            "get_all_where": self._get_all_where,
            "create": self._create,
            "destroy": self._destroy,
        }
        if name in simple:
            return simple[name](cls)
        for prefix, make in (
            ("get_", self._getter),
            ("set_", self._setter),
            ("add_to_", self._map_add),
            ("remove_from_", self._map_remove),
            ("add_", self._set_add),
            ("remove_", self._set_remove),
        ):
            if name.startswith(prefix):
                f = cls.field_map.get(name[len(prefix) :])
                if f is None:
                    continue
                if prefix in ("add_to_", "remove_from_") and not isinstance(f.type, T.Map):
                    continue
                if prefix in ("add_", "remove_") and not isinstance(f.type, T.Set):
                    continue
                return make(cls, f)
        return None

    @staticmethod
    def _accessor_field(cls: Class, name: str) -> Field | None:
        for prefix in ("set_", "add_to_", "remove_from_", "add_", "remove_"):
            if name.startswith(prefix) and name[len(prefix) :] in cls.field_map:
                return cls.field_map[name[len(prefix) :]]
        return None

    # ---- reads ----------------------------------------------------------------------
    def _get_record(self, cls: Class) -> Handler:
        cname = cls.name

        async def get_record(state: ServerState, ctx: CallContext, ref: str) -> Any:
            return state.cache.encoded(ref, state.record(cname, ref), ctx.codec)

        return get_record

    def _get_by_uuid(self, cls: Class) -> Handler:
        cname = cls.name

        async def get_by_uuid(state: ServerState, ctx: CallContext, uuid: str) -> Any:
            ref = state.store.ref_of_uuid(cname, uuid)
            if ref is None:
                raise ApiError("UUID_INVALID", cname, uuid)
            return ref

        return get_by_uuid

    def _get_by_name_label(self, cls: Class) -> Handler:
        cname = cls.name

        async def get_by_name_label(state: ServerState, ctx: CallContext, label: str) -> Any:
            return list(state.store.refs_by_name_label(cname, label))

        return get_by_name_label

    def _get_all(self, cls: Class) -> Handler:
        cname = cls.name

        async def get_all(state: ServerState, ctx: CallContext) -> Any:
            return list(state.store.table(cname))

        return get_all

    def _get_all_records(self, cls: Class) -> Handler:
        cname = cls.name

        async def get_all_records(state: ServerState, ctx: CallContext) -> Any:
            enc = state.cache.encoded
            codec = ctx.codec
            return {ref: enc(ref, rec, codec) for ref, rec in state.store.table(cname).items()}

        return get_all_records

    def _select(self, state: ServerState, cls: Class, expr: str) -> list[str]:
        """Refs of the objects matching a where-expression, or the reference's errors."""
        try:
            match = compile_for_class(expr, cls)
            return [ref for ref, rec in state.store.table(cls.name).items() if match(ref, rec)]
        except WhereSyntaxError as e:
            raise e.api_error() from None
        except UnknownColumnError as e:
            raise e.api_error() from None

    def _get_all_records_where(self, cls: Class) -> Handler:
        cname = cls.name

        async def get_all_records_where(state: ServerState, ctx: CallContext, expr: str) -> Any:
            enc = state.cache.encoded
            table = state.store.table(cname)
            return {ref: enc(ref, table[ref], ctx.codec) for ref in self._select(state, cls, expr)}

        return get_all_records_where

    def _get_all_where(self, cls: Class) -> Handler:

        async def get_all_where(state: ServerState, ctx: CallContext, expr: str) -> Any:
            return self._select(state, cls, expr)

        return get_all_where

    def _getter(self, cls: Class, f: Field) -> Handler:
        cname, fname = cls.name, f.name

        async def getter(state: ServerState, ctx: CallContext, ref: str) -> Any:
            return state.record(cname, ref)[fname]

        return getter

    # ---- writes ---------------------------------------------------------------------
    def _setter(self, cls: Class, f: Field) -> Handler:
        cname, fname = cls.name, f.name

        async def setter(state: ServerState, ctx: CallContext, ref: str, value: Any) -> Any:
            rec = state.record(cname, ref)
            self.set_field(state, cname, ref, rec, fname, value)
            await state.store.sync()
            return ""

        return setter

    def set_field(
        self, state: ServerState, cname: str, ref: str, rec: dict[str, Any], fname: str, value: Any
    ) -> None:
        """Write one field, keeping one-to-many relations in step."""
        old = rec[fname]
        for r in self.relations.by_member.get(cname, ()):
            if r.ref_field == fname and old != value:
                self._unlink(state, r.owner_cls, r.set_field, old, ref)
                self._link(state, r.owner_cls, r.set_field, value, ref)
        state.store.update(cname, ref, {fname: value})

    def _map_add(self, cls: Class, f: Field) -> Handler:
        cname, fname, column = cls.name, f.name, f.column

        async def add_to(
            state: ServerState, ctx: CallContext, ref: str, key: Any, value: Any
        ) -> Any:
            rec = state.record(cname, ref)
            current = rec[fname]
            k = str(key)
            if k in current:
                raise ApiError("MAP_DUPLICATE_KEY", cname, column, rec.get("uuid", ref), k)
            new = dict(current)
            new[k] = value
            state.store.update(cname, ref, {fname: new})
            await state.store.sync()
            return ""

        return add_to

    def _map_remove(self, cls: Class, f: Field) -> Handler:
        cname, fname = cls.name, f.name

        async def remove_from(state: ServerState, ctx: CallContext, ref: str, key: Any) -> Any:
            rec = state.record(cname, ref)
            k = str(key)
            if k in rec[fname]:
                new = dict(rec[fname])
                del new[k]
                state.store.update(cname, ref, {fname: new})
                await state.store.sync()
            return ""

        return remove_from

    def _set_add(self, cls: Class, f: Field) -> Handler:
        cname, fname = cls.name, f.name

        async def add(state: ServerState, ctx: CallContext, ref: str, value: Any) -> Any:
            rec = state.record(cname, ref)
            if value not in rec[fname]:
                state.store.update(cname, ref, {fname: [*rec[fname], value]})
                await state.store.sync()
            return ""

        return add

    def _set_remove(self, cls: Class, f: Field) -> Handler:
        cname, fname = cls.name, f.name

        async def remove(state: ServerState, ctx: CallContext, ref: str, value: Any) -> Any:
            rec = state.record(cname, ref)
            if value in rec[fname]:
                state.store.update(cname, ref, {fname: [x for x in rec[fname] if x != value]})
                await state.store.sync()
            return ""

        return remove

    def _create(self, cls: Class) -> Handler:
        async def create(state: ServerState, ctx: CallContext, args: dict[str, Any]) -> Any:
            ref = self.create_object(state, cls, args)
            await state.store.sync()
            return ref

        return create

    def create_object(self, state: ServerState, cls: Class, args: dict[str, Any]) -> str:
        """Build a record from a constructor struct: defaults filled, extra keys ignored."""
        values: dict[str, Any] = {}
        enums = self.api.enums
        for f in cls.fields:
            if not f.in_constructor:
                continue
            if f.name in args:
                try:
                    values[f.name] = coerce(args[f.name], f.type, enums)
                except (CoercionError, RecursionError):
                    raise ApiError("FIELD_TYPE_ERROR", f.name) from None
            elif not f.has_default:
                raise ApiError(
                    "INTERNAL_ERROR", f'Server_helpers.Dispatcher_FieldNotFound("{f.name}")'
                )
        ref = new_ref()
        if "uuid" in cls.field_map:
            values["uuid"] = new_uuid()
        record = state.new_record(cls.name, values)
        state.store.create(cls.name, ref, record)
        for r, owner in self.relations.links(cls.name, record):
            self._link(state, r.owner_cls, r.set_field, owner, ref)
        return ref

    def _destroy(self, cls: Class) -> Handler:
        async def destroy(state: ServerState, ctx: CallContext, ref: str) -> Any:
            self.destroy_object(state, cls.name, ref)
            await state.store.sync()
            return ""

        return destroy

    def destroy_object(self, state: ServerState, cname: str, ref: str) -> None:
        """Remove an object and its entries in the "many" sets that list it."""
        record = state.record(cname, ref)
        for r, owner in self.relations.links(cname, record):
            self._unlink(state, r.owner_cls, r.set_field, owner, ref)
        state.store.delete(cname, ref)
        state.cache.forget(ref)

    @staticmethod
    def _link(state: ServerState, owner_cls: str, set_field: str, owner: str, ref: str) -> None:
        if not owner or owner == NULL_REF:
            return
        rec = state.store.get(owner_cls, owner)
        if rec is not None and ref not in rec[set_field]:
            state.store.update(owner_cls, owner, {set_field: [*rec[set_field], ref]})

    @staticmethod
    def _unlink(state: ServerState, owner_cls: str, set_field: str, owner: str, ref: str) -> None:
        if not owner or owner == NULL_REF:
            return
        rec = state.store.get(owner_cls, owner)
        if rec is not None and ref in rec[set_field]:
            state.store.update(
                owner_cls, owner, {set_field: [x for x in rec[set_field] if x != ref]}
            )
