"""The component's entry: adapts ``app.handle(data, msg)`` to the WIT export.

``data`` is what ``app.message_parser(payload_bytes)`` returns when app.py
defines one (as the Python wrapper's ``message_parser``); when it raises, the
failure is logged and the default parser (UTF-8 → JSON → text → bytes) takes
over. ``msg.data`` is always the payload as received.

Outcomes: returning normally → ok (ack unless settled); ``natsapp.Reject`` →
reject; ``natsapp.Retry`` → retry (with its delay); ``natsapp.Denied`` or
``natsapp.Invalid`` left unhandled → reject (retrying cannot help); any other
exception is uncaught: its traceback and an ``uncaught exception: Type: text``
line go to stderr (the runtime's log) and it is raised on, which ends the
call as a Rust panic does — a failure with cause ``panic``, redelivered with
backoff, the instance not reused.

Warm-up (WIT 0.1.3, world ``handler-sdk-warm-up``): on an instance made
ahead of need, the runtime calls ``warm`` once before its message. It runs
the SDK's own path on a message without content (wrapping it, reading its
subject, the default parser on a small JSON document), then
``app.warm_up()`` when app.py defines one: a place to touch what the first
``handle`` would, without a message. It must not publish or answer; an
exception is printed as in ``handle`` and drops the instance.
"""

import inspect
import sys
import traceback
import weakref

import app
import natsapp
from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.handler import HandleError_Reject, HandleError_Retry, Retry

if not callable(getattr(app, "handle", None)):
    raise RuntimeError("app.py must define handle(data, msg)")

_parser = getattr(app, "message_parser", None)
_warm_up = getattr(app, "warm_up", None)

# The message handle of every call is a resource object kept by a
# weakref.finalize; the first finalize of a process imports atexit and
# registers with it. Done here, it is part of the component's snapshot, and
# no fresh instance pays for it on its first message.
weakref.finalize(natsapp, lambda: None)

# The line the runtime reads the cause of an uncaught exception from.
UNCAUGHT = "uncaught exception: "


def _parse(data):
    if _parser is None:
        return natsapp.parse(data)
    try:
        return _parser(bytes(data))
    except Exception as e:
        print(f"message_parser failed ({type(e).__name__}: {e}); using the default parser", file=sys.stderr)
        return natsapp.parse(data)


def _run(result):
    """Drives an ``async def handle``: the runtime's calls complete at once."""
    if not inspect.iscoroutine(result):
        return result
    try:
        while True:
            awaited = result.send(None)
            result.throw(RuntimeError(f"cannot await {awaited!r} in a handler: only natsapp calls can be awaited"))
    except StopIteration as done:
        return done.value


def _uncaught(e):
    traceback.print_exc(file=sys.stderr)
    print(f"{UNCAUGHT}{type(e).__name__}: {e}", file=sys.stderr)


class Handler(exports.Handler):
    def handle(self, data, msg):
        try:
            _run(app.handle(_parse(data), natsapp.Message(msg, data)))
        except natsapp.Reject as e:
            raise Err(HandleError_Reject(e.reason))
        except natsapp.Retry as e:
            delay = None if e.delay is None else int(e.delay * 1000)
            raise Err(HandleError_Retry(Retry(delay, e.reason)))
        except (natsapp.Denied, natsapp.Invalid) as e:
            raise Err(HandleError_Reject(f"{type(e).__name__.lower()}: {e}"))
        except BaseException as e:  # SystemExit and KeyboardInterrupt end the call too
            _uncaught(e)
            raise


# A document like those most handlers parse, for the warm-up's parser run.
_WARM_PAYLOAD = b'{"id": 1, "name": "warm-up", "items": [1.5, true, null]}'

# Built against `handler-sdk` (before 0.1.3) the world has no warm-up.
if hasattr(exports, "WarmUp"):

    class WarmUp(exports.WarmUp):
        def warm(self, msg):
            try:
                message = natsapp.Message(msg, b"")
                message.subject
                natsapp.parse(_WARM_PAYLOAD)
                if _warm_up is not None:
                    _run(_warm_up())
            except BaseException as e:
                _uncaught(e)
                raise
