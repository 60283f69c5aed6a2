"""The ``disk-space`` host plugin: free space on the host's root filesystem, for clients
(such as XenCenter) that check room before uploading an update.

Run as ``disk_space.py '<methodCall>...'``; answers on stdout as XenAPIPlugin.dispatch does.
Standard library only: it runs outside the server's process.
"""

from __future__ import annotations

import os
import sys
import xmlrpc.client
from collections.abc import Callable
from typing import Any


def get_avail_host_disk_space(_session: str, _args: dict[str, str]) -> str:
    """Bytes free on the root filesystem."""
    st = os.statvfs("/")
    return str(st.f_bfree * st.f_frsize)


def _size(args: dict[str, str]) -> int:
    if "size" not in args:
        raise Exception("MISSING_SIZE")
    return int(args["size"])


def check_patch_upload(session: str, args: dict[str, str]) -> str:
    """ "True" when an upload of ``size`` bytes fits in the free space."""
    return str(_size(args) < int(get_avail_host_disk_space(session, args)))


def get_required_space(_session: str, args: dict[str, str]) -> str:
    """The space an update of ``size`` bytes needs to be uploaded."""
    return str(_size(args))


FUNCTIONS: dict[str, Callable[[str, dict[str, str]], str]] = {
    "get_avail_host_disk_space": get_avail_host_disk_space,
    "check_patch_upload": check_patch_upload,
    "get_required_space": get_required_space,
}


def _answer(value: dict[str, Any]) -> str:
    return xmlrpc.client.dumps((value,), "", True)


def main(argv: list[str]) -> int:
    """Dispatch one call, XenAPIPlugin style: failures are answers, not exit codes."""
    if len(argv) != 2:
        raise Exception("Incorrect number of commandline arguments")
    params, fn = xmlrpc.client.loads(argv[1])
    session: Any = params[0]
    args: Any = params[1]
    if fn not in FUNCTIONS:
        desc = ["UNKNOWN_XENAPI_PLUGIN_FUNCTION", fn]
        print(_answer({"Status": "Failure", "ErrorDescription": desc}))
        return 0
    try:
        result = FUNCTIONS[fn](session, args)
    except Exception as e:
        desc = ["XENAPI_PLUGIN_FAILURE", fn, e.__class__.__name__, str(e)]
        print(_answer({"Status": "Failure", "ErrorDescription": desc}))
    else:
        print(_answer({"Status": "Success", "Value": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
