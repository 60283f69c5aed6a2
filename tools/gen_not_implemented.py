#!/usr/bin/env python3
"""Rewrite ``src/openxapi/api/not_implemented.txt``: custom messages with no behaviour yet.

Run after adding handlers; a test checks the file matches what the dispatcher finds.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def unhandled() -> list[str]:
    from openxapi.api.generic import Generic
    from openxapi.api.registry import handlers
    from openxapi.spec.model import load

    api = load()
    generic = Generic(api).build()
    custom = handlers()
    return sorted(
        w
        for w, m in api.messages.items()
        if m.lifecycle != "removed" and w not in custom and w not in generic
    )


def main() -> int:
    names = unhandled()
    out = ROOT / "src/openxapi/api/not_implemented.txt"
    out.write_text(
        "# Messages of the API description whose behaviour is not built yet; each answers\n"
        "# NOT_IMPLEMENTED [name]. Regenerate with tools/gen_not_implemented.py.\n"
        + "".join(n + "\n" for n in names)
    )
    print(f"{len(names)} messages not implemented")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
