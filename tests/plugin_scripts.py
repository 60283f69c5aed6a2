"""Host plugins and extensions the tests install: small stdlib-only programs.

Python plugins carry their own copy of the XenAPIPlugin dispatcher (``dispatch``,
``Failure``), so they behave as plugins written against the real module do.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

DISPATCHER = """
import sys
import xmlrpc.client


class Failure(Exception):
    def __init__(self, code, params):
        Exception.__init__(self)
        self.params = [code] + params


def _answer(value):
    return xmlrpc.client.dumps((value,), "", True)


def dispatch(fn_table):
    if len(sys.argv) != 2:
        raise Exception("Incorrect number of commandline arguments")
    params, methodname = xmlrpc.client.loads(sys.argv[1])
    session_id, args = params[0], params[1]
    if methodname in fn_table:
        try:
            result = fn_table[methodname](session_id, args)
            print(_answer({"Status": "Success", "Value": result}))
        except Failure as e:
            print(_answer({"Status": "Failure", "ErrorDescription": e.params}))
        except Exception as e:
            desc = ["XENAPI_PLUGIN_FAILURE", methodname, e.__class__.__name__, str(e)]
            print(_answer({"Status": "Failure", "ErrorDescription": desc}))
    else:
        print(_answer({"Status": "Failure",
                       "ErrorDescription": ["UNKNOWN_XENAPI_PLUGIN_FUNCTION", methodname]}))
"""

#: The echo plugin of the reference's test suite, plus functions that show what a plugin sees.
ECHO = """
import os
import time


def main(session, args):
    if "sleep" in args:
        time.sleep(float(args["sleep"]))
    return "args were: %s" % (repr(args),)


def session(session, args):
    return session


def call(session, args):
    return sys.argv[1]


def env(session, args):
    # LC_CTYPE is the one variable Python's own start-up may add (PEP 538).
    return repr(sorted((k, v) for k, v in os.environ.items() if k != "LC_CTYPE"))


def fail(session, args):
    raise Failure("SR_BACKEND_FAILURE_1", ["one", "two"])


def boom(session, args):
    raise ValueError("no good")


def number(session, args):
    return 42


dispatch({"main": main, "session": session, "call": call, "env": env, "fail": fail,
          "boom": boom, "number": number})
"""

#: An extension that answers with what it was given: its argv and the call on stdin.
EXT_ECHO = """
import sys
import xmlrpc.client

text = sys.stdin.read()
params, name = xmlrpc.client.loads(text)
value = {"argv": sys.argv[1:], "name": name, "params": list(params), "xml": text}
answer = {"Status": "Success", "Value": value}
print(xmlrpc.client.dumps((answer,), "", True, allow_none=True))
"""

#: The reference's Test.test extension: always the failure CODE [a, b].
EXT_FAIL = """
import sys
import xmlrpc.client

sys.stdin.read()
desc = ["CODE", "a", "b"]
print(xmlrpc.client.dumps(({"Status": "Failure", "ErrorDescription": desc},), "", True))
"""


def write_python(directory: Path, name: str, body: str, *, plugin: bool = True) -> Path:
    """An executable Python program; a plugin gets the dispatcher prepended."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    head = f"#!{sys.executable}\n" + (DISPATCHER if plugin else "")
    path.write_text(head + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def write_shell(directory: Path, name: str, body: str) -> Path:
    """An executable shell script."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path
