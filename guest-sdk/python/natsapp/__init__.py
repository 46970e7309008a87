"""Write natsapp-wasm handlers in Python.

In ``app.py``::

    import natsapp

    def handle(data, msg):
        order = data                      # already decoded: JSON → dict/list, text → str, else bytes
        if "order_id" not in order:
            raise natsapp.Reject("an order needs an id")     # term (+ dead letter)
        natsapp.publish("order.status", {"order_id": order["order_id"], "status": "processed"})
        # returning normally acks; any other exception retries (nak with backoff)

``async def handle(data, msg)`` works too: ``await`` the calls of this module.

Build: ``componentize-py -d wit -w handler-sdk componentize natsapp_main -p . -o handler.wasm``
(with this SDK and the WIT folder beside ``app.py``; ``natsapp-wasm new --lang python`` sets that up).
"""

import json as _json

from wit_world.imports import keyvalue as _keyvalue
from wit_world.imports import publisher as _publisher
from wit_world.imports import store as _store
from wit_world.imports import types as _types
from componentize_py_types import Err as _Err

__all__ = [
    "Reject", "Retry", "HostError", "Denied", "Timeout", "Unavailable", "Invalid",
    "Message", "Bucket", "Entry", "publish", "request", "config", "parse", "encode",
]


class Reject(Exception):
    """Raise to end the message for good: term, and a dead-letter copy when configured."""

    def __init__(self, reason):
        super().__init__(str(reason))
        self.reason = str(reason)


class Retry(Exception):
    """Raise to have the message delivered again, after ``delay`` seconds or the configured backoff."""

    def __init__(self, reason="retry", delay=None):
        super().__init__(str(reason))
        self.reason = str(reason)
        self.delay = delay


class HostError(Exception):
    """A call into the runtime failed."""


class Denied(HostError):
    """Not allowed: the subject is outside the publish allow-list, or the message is already settled."""


class Timeout(HostError):
    """No answer in time (PubAck or reply)."""


class Unavailable(HostError):
    """NATS cannot serve the call now; retrying later may succeed."""


class Invalid(HostError):
    """Bad arguments (subject, header)."""


def _host_error(err):
    value = err.value if isinstance(err, _Err) else err
    if isinstance(value, _types.Error_Denied):
        return Denied(value.value)
    if isinstance(value, _types.Error_Timeout):
        return Timeout("timed out")
    if isinstance(value, _types.Error_Unavailable):
        return Unavailable(value.value)
    if isinstance(value, _types.Error_Invalid):
        return Invalid(value.value)
    return HostError(getattr(value, "value", str(value)))


def _call(fn, *args):
    try:
        return fn(*args)
    except _Err as e:
        raise _host_error(e) from None


class Result:
    """What a runtime call returned; ``await`` it in an ``async def handle``."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __await__(self):
        return self.value
        yield  # makes this a generator: `await` returns at once

    def __getattr__(self, name):
        return getattr(self.value, name)

    def __bool__(self):
        return self.value is not None

    def __repr__(self):
        return f"Result({self.value!r})"


def encode(data):
    """Bytes as they are, text as UTF-8, models (``model_dump``/``dict``) and JSON values as JSON."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    if hasattr(data, "model_dump"):
        data = data.model_dump(mode="json")
    elif hasattr(data, "dict") and callable(data.dict):
        data = data.dict()
    return _json.dumps(data, default=str, separators=(",", ":")).encode("utf-8")


# What a JSON document can start with (json.loads also takes NaN and Infinity).
_JSON_START = frozenset('{["-0123456789tfnNI \t\n\r')


def parse(data):
    """The default parser: UTF-8 → JSON → text → bytes."""
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return bytes(data)
    # Text that cannot be JSON skips the failed parse: raising and catching
    # its error costs more than the rest of a handler call.
    if text[:1] not in _JSON_START:
        return text
    try:
        return _json.loads(text)
    except ValueError:
        return text


def _headers(headers):
    if headers is None:
        return []
    if isinstance(headers, dict):
        headers = headers.items()
    return [(str(k), str(v)) for k, v in headers]


def publish(subject, data, headers=None):
    """Publishes ``data`` (see ``encode``). A JetStream subject returns its PubAck
    (``.stream``, ``.sequence``, ``.duplicate``) once the stream stored it; a core
    subject returns a false ``Result``."""
    return Result(_call(_publisher.publish, subject, encode(data), _headers(headers)))


def request(subject, data, timeout=5.0, headers=None):
    """Sends a request and returns the reply (``.data`` bytes, ``.headers``)."""
    return Result(_call(_publisher.request, subject, encode(data), _headers(headers), int(timeout * 1000)))


class Entry:
    """A stored value (``.value`` bytes) and the revision that wrote it (``.revision``)."""

    __slots__ = ("value", "revision")

    def __init__(self, value, revision):
        self.value = bytes(value)
        self.revision = revision

    def text(self):
        return self.value.decode("utf-8")

    def json(self):
        return _json.loads(self.value)

    def __repr__(self):
        return f"Entry({self.value!r}, revision={self.revision})"


class Bucket:
    """A key-value bucket (JetStream KV) granted in service.toml: ``kv = { PAYMENTS = "rw" }``.
    Values are written as ``encode`` writes them. ::

        payments = natsapp.Bucket("PAYMENTS")
        if payments.create(f"charged.{order_id}", {"status": "charged"}) is None:
            return                        # an earlier delivery charged it already
    """

    def __init__(self, name):
        self.name = str(name)

    def get(self, key):
        """The key's ``Entry``, or None when it has no value."""
        e = _call(_keyvalue.get, self.name, key)
        return None if e is None else Entry(e.value, e.revision)

    def put(self, key, value):
        """Stores ``value`` whatever was there; returns its revision."""
        return _call(_keyvalue.put, self.name, key, encode(value))

    def create(self, key, value):
        """Stores ``value`` only if the key has none; None when it has one (nothing written)."""
        return _call(_keyvalue.create, self.name, key, encode(value))

    def update(self, key, value, revision):
        """Stores ``value`` only if the key's revision is still ``revision``; None when it is not."""
        return _call(_keyvalue.update, self.name, key, encode(value), revision)

    def delete(self, key):
        """Deletes the key's value."""
        _call(_keyvalue.delete, self.name, key)


def config(key, default=None):
    """The subscriber's ``config = { … }`` value for ``key``."""
    try:
        value = _store.get(key)
    except _Err:
        return default
    return default if value is None else value


class Message:
    """The delivery being handled; valid during ``handle`` only."""

    def __init__(self, raw):
        self._raw = raw

    @property
    def subject(self):
        return self._raw.subject()

    @property
    def reply(self):
        """Where the publisher wants an answer: its ``Reply-To`` header."""
        return self._raw.reply()

    @property
    def headers(self):
        """``(name, value)`` pairs; a name may repeat."""
        return self._raw.headers()

    def header(self, name, default=None):
        for n, v in self._raw.headers():
            if n == name:
                return v
        return default

    @property
    def delivery(self):
        """Stream, consumer, stream_sequence, consumer_sequence, delivered, pending, published_unix_ns."""
        return self._raw.delivery()

    def ack(self):
        return Result(_call(self._raw.ack))

    def nak(self, delay=None):
        """Redeliver, after ``delay`` seconds when given."""
        return Result(_call(self._raw.nak, None if delay is None else int(delay * 1000)))

    def term(self, reason=None):
        return Result(_call(self._raw.term, reason))

    def in_progress(self):
        return Result(_call(self._raw.in_progress))
