"""Write natsapp-wasm handlers in Python.

In ``app.py``::

    import natsapp

    def handle(data, msg):
        order = data                      # already decoded: JSON → dict/list, text → str, else bytes
        if "order_id" not in order:
            raise natsapp.Reject("an order needs an id")     # term (+ dead letter)
        natsapp.publish("order.status", {"order_id": order["order_id"], "status": "processed"})
        # returning normally acks; natsapp.Retry retries; an uncaught exception is a crash:
        # redelivered with backoff, counted as a failure with cause panic

``async def handle(data, msg)`` works too: ``await`` the calls of this module.

Build: ``componentize-py -d wit -w handler-sdk-warm-up componentize natsapp_main -p . -o handler.wasm``
(with this SDK and the WIT folder beside ``app.py``; ``natsapp-wasm new --lang python`` sets that up).
"""

import json as _json

from wit_world.imports import keyvalue as _keyvalue
from wit_world.imports import outgoing_handler as _outgoing_handler
from wit_world.imports import streams as _streams
from wit_world.imports import wasi_http_types as _http
from wit_world.imports import publisher as _publisher
from wit_world.imports import store as _store
from wit_world.imports import natsapp_handler_types as _types
from componentize_py_types import Err as _Err
from componentize_py_types import Ok as _Ok

__all__ = [
    "Reject", "Retry", "HostError", "Denied", "Timeout", "Unavailable", "Invalid",
    "Message", "Bucket", "Entry", "HttpError", "HttpResponse", "http_request",
    "publish", "request", "publisher", "Publisher", "config", "config_all", "parse", "encode",
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


def publish(subject, data, headers=None, delay=None, ttl=None):
    """Publishes ``data`` (see ``encode``). A JetStream subject returns its PubAck
    (``.stream``, ``.sequence``, ``.duplicate``) once the stream stored it; a core
    subject returns a false ``Result``. With ``outputs.mode = "atomic"`` every publish
    returns a false ``Result``: the output is held and stored with the others after
    ``handle`` returns, or not at all. ``delay`` (seconds, 1 or more) stores it that
    much later, ``ttl`` (seconds, 1 or more) lets the stream drop it after that long:
    the stream must allow schedules (and, for a delay, capture ``natsapp.delayed.>``)
    or TTLs."""
    pairs = list(_headers(headers))
    if delay is not None:
        pairs.append(("Natsapp-Delay", "%dms" % round(delay * 1000)))
    if ttl is not None:
        pairs.append(("Nats-TTL", "%dms" % round(ttl * 1000)))
    return Result(_call(_publisher.publish, subject, encode(data), pairs))


class Publisher:
    """Publishes to one subject, as the Python wrapper's ``app.publisher(subject=…)``
    does: ``await output.publish(model)``. The subject must be in the
    subscriber's ``publish`` allow-list; streams are service.toml's business."""

    def __init__(self, subject, headers=None):
        self.subject = subject
        self.headers = headers

    def publish(self, data, headers=None):
        merged = dict(_headers(self.headers))
        merged.update(_headers(headers))
        return publish(self.subject, data, merged or None)


def publisher(subject, headers=None, **_ignored):
    """A :class:`Publisher` for ``subject`` (keyword arguments the wrapper's
    ``app.publisher`` takes, such as ``stream``, are accepted and ignored)."""
    return Publisher(subject, headers)


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


class HttpError(Exception):
    """An HTTP request got no response. ``kind`` is denied (not granted, an
    internal address: the message names the rule), quota (the tenant's
    ``http_rate`` or ``http_concurrency``, for now), timeout, too_large (the
    body passed ``limits.http_response``), invalid or failed."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def _http_error(code):
    kind = type(code).__name__.replace("ErrorCode_", "")
    value = getattr(code, "value", None)
    if kind == "InternalError" and isinstance(value, str) and value.startswith("denied: quota: "):
        return HttpError("quota", value)
    if kind == "InternalError" and isinstance(value, str) and value.startswith("denied: "):
        return HttpError("denied", value)
    if kind in ("ConnectionTimeout", "ConnectionReadTimeout", "HttpResponseTimeout", "DnsTimeout"):
        return HttpError("timeout", "HTTP request timed out")
    if kind == "HttpResponseBodySize":
        return HttpError("too_large", "HTTP response body larger than the limit")
    return HttpError("failed", f"HTTP request failed: {kind}" + (f" {value!r}" if value is not None else ""))


class HttpResponse:
    """``.status``, ``.headers`` (``(name, value)`` pairs), ``.body`` bytes; ``.text()``, ``.json()``."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name, default=None):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return default

    def text(self):
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        return _json.loads(self.body)


_METHODS = {
    "GET": _http.Method_Get, "HEAD": _http.Method_Head, "POST": _http.Method_Post,
    "PUT": _http.Method_Put, "DELETE": _http.Method_Delete, "PATCH": _http.Method_Patch,
    "OPTIONS": _http.Method_Options,
}


def http_request(method, url, body=None, headers=None, timeout=None):
    """Sends an HTTP request through wasi:http to an origin the subscriber is
    granted (``http = [...]`` in service.toml) and returns the whole
    ``HttpResponse``; raises ``HttpError`` when no response comes. ``body`` is
    sent as ``encode`` writes it (a dict as JSON); ``timeout`` in seconds
    bounds connecting, the response and each body chunk (capped by the
    runtime's ``limits.http_timeout``). Redirects are not followed."""
    if url.startswith("https://"):
        scheme, rest = _http.Scheme_Https(), url[len("https://"):]
    elif url.startswith("http://"):
        scheme, rest = _http.Scheme_Http(), url[len("http://"):]
    else:
        raise HttpError("invalid", f"{url!r} is not an http or https URL")
    cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0], default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if not path.startswith("/"):
        path = "/" + path
    pairs = _headers(headers)
    data = b"" if body is None else encode(body)
    if body is not None and not isinstance(body, (bytes, bytearray, memoryview, str)):
        if not any(n.lower() == "content-type" for n, _ in pairs):
            pairs.append(("content-type", "application/json"))
    try:
        fields = _http.Fields.from_list([(n, v.encode("utf-8")) for n, v in pairs])
    except _Err as e:
        raise HttpError("invalid", f"header: {e.value}") from None
    req = _http.OutgoingRequest(fields)
    method_kind = _METHODS.get(method.upper())
    req.set_method(method_kind() if method_kind else _http.Method_Other(method.upper()))
    req.set_scheme(scheme)
    req.set_authority(authority)
    req.set_path_with_query(path)
    out_body = req.body()
    options = None
    if timeout is not None:
        ns = int(timeout * 1_000_000_000)
        options = _http.RequestOptions()
        options.set_connect_timeout(ns)
        options.set_first_byte_timeout(ns)
        options.set_between_bytes_timeout(ns)
    # Sent first, so the runtime reads the body while it is written: the
    # stream buffers little, and a larger body written before would wait forever.
    try:
        future = _outgoing_handler.handle(req, options)
        with out_body.write() as stream:
            for i in range(0, len(data), 4096):
                stream.blocking_write_and_flush(data[i:i + 4096])
        _http.OutgoingBody.finish(out_body, None)
    except _Err as e:
        value = e.value
        if isinstance(value, _streams.StreamError_LastOperationFailed):
            code = _http.http_error_code(value.value)
            raise (_http_error(code) if code is not None else HttpError("failed", "writing the body failed")) from None
        raise (_http_error(value) if type(value).__name__.startswith("ErrorCode_") else HttpError("failed", f"HTTP request failed: {value!r}")) from None
    with future.subscribe() as pollable:
        pollable.block()
    result = future.get()
    if result is None or not isinstance(result, _Ok):
        raise HttpError("failed", "HTTP request failed: no response")
    if not isinstance(result.value, _Ok):
        raise _http_error(result.value.value)
    response = result.value.value
    status = response.status()
    with response.headers() as fields:
        resp_headers = [(n, v.decode("utf-8", errors="replace")) for n, v in fields.entries()]
    incoming = response.consume()
    chunks = []
    with incoming.stream() as stream:
        while True:
            try:
                chunks.append(stream.blocking_read(65536))
            except _Err as e:
                if isinstance(e.value, _streams.StreamError_Closed):
                    break
                code = _http.http_error_code(e.value.value)
                raise (_http_error(code) if code is not None else HttpError("failed", e.value.value.to_debug_string())) from None
    _http.IncomingBody.finish(incoming)
    return HttpResponse(status, resp_headers, b"".join(chunks))


def config(key, default=None):
    """The subscriber's ``config = { … }`` value for ``key``."""
    try:
        value = _store.get(key)
    except _Err:
        return default
    return default if value is None else value


def config_all():
    """Every ``config = { … }`` value of the subscriber, as a dict."""
    try:
        return dict(_store.get_all())
    except _Err:
        return {}


class Message:
    """The delivery being handled; valid during ``handle`` only."""

    def __init__(self, raw, data=b""):
        self._raw = raw
        self._data = data

    @property
    def data(self):
        """The payload as received (bytes), whatever the parser made of it."""
        return bytes(self._data)

    @property
    def subject(self):
        return self._raw.subject()

    @property
    def reply(self):
        """Where the publisher wants an answer: a request's reply subject (an
        endpoint's message), else its ``Reply-To`` header."""
        return self._raw.reply()

    def respond(self, data, headers=None):
        """Answers the message on its reply address, once; ``data`` as ``publish``
        encodes it."""
        return Result(_call(self._raw.respond, encode(data), list(_headers(headers))))

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

    @property
    def kv_key(self):
        """With ``watch = { kv = … }``: the key whose change this is (``None`` for a
        message of any other stream). A bucket is the stream ``KV_<bucket>`` whose
        subjects are ``$KV.<bucket>.<key>``."""
        stream = self._raw.delivery().stream
        if not stream.startswith("KV_"):
            return None
        prefix = "$KV." + stream[3:] + "."
        subject = self._raw.subject()
        return subject[len(prefix):] if subject.startswith(prefix) else None

    @property
    def kv_operation(self):
        """With ``watch = { kv = … }``: ``"put"``, ``"delete"`` or ``"purge"`` (``None``
        for a message of any other stream)."""
        if self.kv_key is None:
            return None
        return {"DEL": "delete", "PURGE": "purge"}.get(self.header("KV-Operation"), "put")

    @property
    def kv_revision(self):
        """With ``watch = { kv = … }``: the change's revision, what ``Bucket.update``
        compares (``None`` for a message of any other stream)."""
        if self.kv_key is None:
            return None
        return self._raw.delivery().stream_sequence

    def ack(self):
        """Acknowledge now. With ``outputs.mode = "atomic"`` the ack is sent after the
        outputs' commit, and only if ``handle`` returns without an error."""
        return Result(_call(self._raw.ack))

    def nak(self, delay=None):
        """Redeliver, after ``delay`` seconds when given."""
        return Result(_call(self._raw.nak, None if delay is None else int(delay * 1000)))

    def term(self, reason=None):
        return Result(_call(self._raw.term, reason))

    def in_progress(self):
        return Result(_call(self._raw.in_progress))
