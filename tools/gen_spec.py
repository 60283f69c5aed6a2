#!/usr/bin/env python3
"""Regenerate ``src/openxapi/spec/data/api.json`` from the published API description.

Inputs (default ``../shared/spec``): ``xenapi.json`` (classes, fields, messages, enums),
``async.json`` (async and session flags) and ``datamodel-extras.json`` (parameter
defaults, DB column names, roles, API version). The output keeps facts only, no prose.

Usage: python tools/gen_spec.py [--source DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from openxapi.spec import types as T  # noqa: E402

LIFECYCLE = {
    "Published_s": "published",
    "Prototyped_s": "prototyped",
    "Deprecated_s": "deprecated",
    "Removed_s": "removed",
    "Extended_s": "published",
    "Changed_s": "published",
}
QUALIFIER = {"RO/runtime": "DynamicRO", "RO/constructor": "StaticRO", "RW": "RW"}


def _split_top(text: str, sep: str) -> list[str]:
    """Split a default literal at top-level separators, ignoring quoted text."""
    out, depth, cur, quoted = [], 0, [], False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "{(":
            depth += 1
        elif not quoted and ch in "})":
            depth -= 1
        if not quoted and depth == 0 and text.startswith(sep, i):
            out.append("".join(cur))
            cur = []
            i += len(sep)
            continue
        cur.append(ch)
        i += 1
    if "".join(cur).strip():
        out.append("".join(cur))
    return [s.strip() for s in out]


def parse_default(t: T.Type, text: str) -> Any:
    """Turn the description's printed default into a JSON value of type ``t``."""
    text = text.strip()
    if isinstance(t, T.Prim):
        if t.name == "string":
            if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
                return text[1:-1]
            return text
        if t.name == "int":
            return int(text)
        if t.name == "float":
            return float(text + "0" if text.endswith(".") else text)
        if t.name == "bool":
            return text == "true"
        if t.name == "datetime":
            return text
    if isinstance(t, T.Ref):
        return "OpaqueRef:NULL" if text in ("Null", "", '""') else text
    if isinstance(t, T.Enum):
        return text
    if isinstance(t, T.Set):
        inner = text.strip("{}")
        return [parse_default(t.elem, x) for x in _split_top(inner, ",")] if inner.strip() else []
    if isinstance(t, T.Map):
        inner = text.strip()[1:-1]
        result: dict[str, Any] = {}
        for item in _split_top(inner, ","):
            k, v = _split_top(item, "->")
            key = parse_default(t.key, k)
            result[str(key)] = parse_default(t.value, v)
        return result
    raise ValueError(f"cannot parse default {text!r} for {T.render(t)}")


def lifecycle(obj: dict[str, Any]) -> str:
    return LIFECYCLE.get(obj.get("lifecycle", {}).get("state", "Published_s"), "published")


def build(source: Path) -> dict[str, Any]:
    classes_in = json.loads((source / "xenapi.json").read_text())
    flags = json.loads((source / "async.json").read_text())["messages"]
    extras = json.loads((source / "datamodel-extras.json").read_text())
    param_defaults: dict[str, dict[str, Any]] = extras["param_defaults"]
    db_columns: dict[str, Any] = extras["db_columns"]

    enums: dict[str, list[str]] = {}
    classes: dict[str, Any] = {}
    for c in classes_in:
        name = c["name"]
        for e in c.get("enums", []):
            enums[e["name"]] = [v["name"] for v in e["values"]]
        cols = db_columns.get(name, {})
        fields = []
        for f in c["fields"]:
            ftype = T.parse(f["type"])
            entry: dict[str, Any] = {
                "name": f["name"],
                "type": T.render(ftype),
                "qualifier": QUALIFIER[f["qualifier"]],
                "lifecycle": lifecycle(f),
            }
            if f.get("default") is not None:
                entry["default"] = parse_default(ftype, f["default"])
            column = cols.get("columns", {}).get(f["name"])
            if column and column != f["name"]:
                entry["column"] = column
            fields.append(entry)
        messages = []
        for m in c["messages"]:
            wire = f"{name}.{m['name']}"
            flag = flags.get(wire, {"async": False, "session": True})
            defaults = param_defaults.get(wire, {})
            params = []
            for p in m["params"]:
                if p["name"] == "session_id" and p["type"] == "session ref":
                    continue
                pe: dict[str, Any] = {"name": p["name"], "type": T.render(T.parse(p["type"]))}
                if p["name"] in defaults:
                    pe["default"] = defaults[p["name"]]
                params.append(pe)
            result = T.parse(m["result"][0]) if m["result"] else T.VOID
            msg: dict[str, Any] = {
                "name": m["name"],
                "params": params,
                "result": T.render(result),
                "session": flag["session"],
                "async": flag["async"],
                "roles": m["roles"],
                "errors": [e["name"] for e in m.get("errors", [])],
                "lifecycle": lifecycle(m),
                "implicit": bool(m.get("implicit")),
            }
            messages.append(msg)
        names = {m["name"] for m in messages}
        if "get_all_records" in names:
            base = next(m for m in messages if m["name"] == "get_all_records")
            for extra_name, result in (
                ("get_all_records_where", f"({name} ref -> {name} record) map"),
                ("get_all_where", f"{name} ref set"),
            ):
                if extra_name not in names:
                    messages.append(
                        {
                            "name": extra_name,
                            "params": [{"name": "expr", "type": "string"}],
                            "result": result,
                            "session": True,
                            "async": False,
                            "roles": base["roles"],
                            "errors": [],
                            "lifecycle": "published",
                            "implicit": True,
                        }
                    )
        classes[name] = {
            "lifecycle": lifecycle(c),
            "in_db": bool(cols.get("in_db", False)),
            "fields": fields,
            "messages": messages,
        }
    roles = [
        {
            "name": r["name_label"],
            "uuid": r["uuid"],
            "internal": r["is_internal"],
            "includes": r["permission_superset_of_roles"],
        }
        for r in extras["roles"]["roles"]
    ]
    return {
        "api_version": {
            "major": extras["api_version"]["major"],
            "minor": extras["api_version"]["minor"],
            "vendor": "XenSource",
        },
        "roles": roles,
        "enums": enums,
        "classes": classes,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "spec")
    ap.add_argument("--out", type=Path, default=ROOT / "src/openxapi/spec/data/api.json")
    ns = ap.parse_args()
    data = build(ns.source)
    text = json.dumps(data, separators=(",", ":"), sort_keys=False)
    text = re.sub(r'\},\{"name"', '},\n{"name"', text)  # one entry per line: readable diffs
    ns.out.write_text(text + "\n")
    n_msgs = sum(len(c["messages"]) for c in data["classes"].values())
    print(f"wrote {ns.out}: {len(data['classes'])} classes, {n_msgs} messages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
