"""A lean HTTP/1.1 client over a keep-alive pool: the proxy's forward to ad servers, and the
calls to the Permutive APIs when tracing is off.

Both are on a request's path, and a general client costs several times what this one does
(about 70 µs of CPU per call against 10 µs here, measured on loopback): it builds a URL
object, a request object, tracing and cookie hooks and a timer context for each call. Our
callers need none of it: the target is a checked origin-form string built once, the headers a
short list, redirects are answers (never followed), bodies are not decompressed. What it keeps:
TLS (with a client certificate where configured), one total timeout per call (connect,
request, answer and body), bounds on connections at once (in all and per origin),
connections reused only after a whole, keep-alive answer and closed after `idle_s` unused, and
one retry on a fresh connection for a GET or HEAD whose reused connection turned out closed
before any byte of the answer (closed by the server while idle; never a POST, which the server
may have acted on). Response framing is in `plugin.http1`.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

from plugin.http1 import MAX_HEAD, Body, Head, ProtocolError, framing, parse_head

IDLE_S = 15.0
"""By default, an idle pooled connection older than this is closed rather than reused."""
_HIGH_WATER = 256 * 1024
"""Body bytes buffered before the socket stops being read (a slow client downstream)."""
_MAX_INTERIM = 8
"""Interim (1xx) answers before the final one, at most."""


class HttpError(Exception):
    """The server could not be reached, or its answer could not be read (`kind`). `unsent`:
    the request provably never left (no connection could be made)."""

    def __init__(self, kind: str, *, unsent: bool = False) -> None:
        super().__init__(kind)
        self.kind = kind
        self.unsent = unsent


Key = tuple[str, int, bool]
"""An origin as the pool knows it: host, port, TLS or not."""


class Origin:
    """Where one server is (scheme, host and port of its base URL): built once."""

    __slots__ = ("host", "host_header", "host_line", "key", "port", "target_at", "tls")

    def __init__(self, base: str, tls: ssl.SSLContext | None) -> None:
        parts = urlsplit(base)
        secure = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if secure else 80)
        self.tls = (tls or ssl.create_default_context()) if secure else None
        default = self.port == (443 if secure else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default else f"{host}:{self.port}"
        self.host_line = f"Host: {self.host_header}\r\n"
        self.key: Key = (self.host, self.port, secure)
        self.target_at = len(f"{parts.scheme}://{parts.netloc}")
        """Where the request target starts in a URL on this origin."""


class _Conn(asyncio.Protocol):
    """One connection: one request at a time, its answer's head and body as they arrive."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: Key) -> None:
        self.loop = loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._head = b""
        self._method = "GET"
        self._waiter: asyncio.Future[None] | None = None
        self.answer: Head | None = None
        self.body: Body | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self.error: BaseException | None = None
        self.got_bytes = False
        self.pooled = False
        """In the pool's idle list."""
        self.released = False
        """No longer counted in the pool's bounds: it never will be again."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it

    def send(self, method: str, data: bytes) -> None:
        assert self.transport is not None
        self._method = method
        self._head = b""
        self.answer = None
        self.body = None
        self.got_bytes = False
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            if self.body is None:
                self._on_head(data)
            else:
                self._on_body(data)
        except ProtocolError as e:
            self._fail(HttpError(f"protocol: {e}"))

    def _on_head(self, data: bytes) -> None:
        buf = self._head + data if self._head else data
        for _ in range(_MAX_INTERIM + 1):
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise ProtocolError("head too large")
                self._head = buf
                return
            head = parse_head(buf[:end])
            buf = buf[end + 4 :]
            if head.status >= 200:
                break
            if head.status == 101:  # an interim answer (100, 103): the real one follows
                raise ProtocolError("switching protocols")
        else:
            raise ProtocolError("too many interim answers")
        rest = buf
        self._head = b""
        self.answer = head
        self.body = Body(framing(head, self._method))
        self._on_body(rest)
        self._wake()

    def _on_body(self, data: bytes) -> None:
        body = self.body
        assert body is not None
        for piece in body.feed(data):
            self.chunks.append(piece)
            self._buffered += len(piece)
        if body.rest:  # bytes after a whole answer, asked for by no request: not reused
            body.rest = b""
            self.abort()
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def take(self) -> list[bytes]:
        """The body bytes that arrived since the last call."""
        out = list(self.chunks)
        self.chunks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return out

    async def wait(self) -> None:
        """Until more of the answer (or its end, or a failure) has arrived."""
        if self.error is not None:
            raise self.error.with_traceback(None)
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, e: BaseException) -> None:
        if self.error is None:
            self.error = e
        self.abort()
        w = self._waiter
        if w is not None and not w.done():
            w.set_exception(self.error)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def timed_out(self) -> None:
        self._fail(TimeoutError())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.body is not None and not self.body.done:
            try:
                self.body.eof()
            except ProtocolError:
                self._fail(HttpError("closed: body cut short"))
                return
            self._wake()
            return
        if self.error is None:
            self._fail(HttpError("closed"))


class Answer:
    """The ad server's answer: status, reason and headers at once, the body as it arrives.
    `close()` gives the connection back to the pool when the answer was whole."""

    __slots__ = ("_client", "_closed", "_conn", "_deadline", "headers", "reason", "status")

    def __init__(self, client: HttpClient, conn: _Conn, deadline: asyncio.TimerHandle) -> None:
        head = conn.answer
        assert head is not None
        self._client = client
        self._closed = False
        self._conn = conn
        self._deadline = deadline
        self.status = head.status
        self.reason = head.reason
        self.headers = head.headers

    @property
    def content_length(self) -> int | None:
        """The body's length, when the answer is delimited by one (`plugin.http1.framing`)."""
        body = self._conn.body
        return body.length if body is not None else None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, in the pieces it arrived in."""
        conn = self._conn
        body = conn.body
        assert body is not None
        while True:
            done = body.done  # before taking: what arrives while a piece is out comes next
            for piece in conn.take():
                yield piece
            if done and not conn.chunks:
                return
            if not conn.chunks and not body.done:
                await conn.wait()

    def whole(self) -> bytes | None:
        """The body, when all of it has arrived already (a small answer comes with its head,
        in the same read); None otherwise: then `chunks()` it."""
        conn = self._conn
        if conn.body is None or not conn.body.done:
            return None
        return b"".join(conn.take())

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.chunks()])

    def close(self) -> None:
        """Done with the answer (again: nothing more happens)."""
        if self._closed:
            return
        self._closed = True
        self._deadline.cancel()
        conn = self._conn
        body, head = conn.body, conn.answer
        whole = body is not None and body.done and not conn.chunks
        if whole and head is not None and head.keep_alive and not conn.closed:
            self._client._give_back(conn)
        else:
            self._client._forget(conn)


class HttpClient:
    """Requests over pooled keep-alive connections: at most `limit` connections open at once
    (0: no bound), and `per_origin` to any one origin (0: no bound of its own)."""

    def __init__(self, limit: int = 0, per_origin: int = 0, idle_s: float = IDLE_S) -> None:
        self._limit = limit
        self._per_origin = per_origin
        self._idle_s = idle_s
        self._idle: dict[Key, list[_Conn]] = {}
        self._open = 0
        self._open_to: collections.Counter[Key] = collections.Counter()
        self._queue: collections.deque[tuple[Key, asyncio.Future[None]]] = collections.deque()
        self._closing = False
        self._sweep: asyncio.TimerHandle | None = None

    async def request(
        self,
        origin: Origin,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        timeout_s: float,
    ) -> Answer:
        """Sends one request; the answer's head is in, its body is to be read, then `close()`
        it. Raises TimeoutError or HttpError (`unsent` when the request provably never left)."""
        fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
        if fields.count("\n") != len(headers) or fields.count("\r") != len(headers):
            raise HttpError("header value", unsent=True)  # never from aiohttp's parser
        length = "" if body is None else f"Content-Length: {len(body)}\r\n"
        data = f"{method} {target} HTTP/1.1\r\n{origin.host_line}{fields}{length}\r\n".encode()
        if body:
            data += body
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for attempt in (0, 1):
            conn, reused = await self._acquire(origin, loop, deadline)
            timer = loop.call_at(deadline, conn.timed_out)
            conn.send(method, data)
            try:
                while conn.answer is None:
                    await conn.wait()
            except HttpError:
                timer.cancel()
                self._forget(conn)
                if attempt == 0 and reused and not conn.got_bytes and method in ("GET", "HEAD"):
                    continue  # closed by the server while idle: once more, on a new one
                raise
            except BaseException:
                timer.cancel()
                self._forget(conn)
                raise
            return Answer(self, conn, timer)
        raise AssertionError("unreachable")

    async def _acquire(
        self, origin: Origin, loop: asyncio.AbstractEventLoop, deadline: float
    ) -> tuple[_Conn, bool]:
        """An idle connection to `origin` (True), or a new one (False) once there is room."""
        key = origin.key
        while True:
            idle = self._idle.get(key)
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                conn.pooled = False
                if not conn.closed and now - conn.idle_since < self._idle_s:
                    return conn, True
                self._forget(conn)
            if self._room(key, make=True):
                break
            waiter = loop.create_future()
            self._queue.append((key, waiter))
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken for room it will not use: the next one may
                raise
        self._open += 1
        self._open_to[key] += 1
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await loop.create_connection(
                    lambda: _Conn(loop, key),
                    origin.host,
                    origin.port,
                    ssl=origin.tls,
                    server_hostname=origin.host if origin.tls is not None else None,
                )
        except TimeoutError:
            self._released(key)
            raise
        except (OSError, ssl.SSLError) as e:
            self._released(key)
            raise HttpError(f"connect: {type(e).__name__}", unsent=True) from None
        except BaseException:
            self._released(key)
            raise
        return conn, False

    def _room(self, key: Key, *, make: bool) -> bool:
        """Whether a new connection to `key` may open now; when the bound in all is reached,
        an idle connection elsewhere is room, closed to make it if `make`."""
        if self._per_origin and self._open_to[key] >= self._per_origin:
            return False
        if not self._limit or self._open < self._limit:
            return True
        for conns in self._idle.values():
            if conns:
                if make:
                    self._forget(conns[0])
                return True
        return False

    def _give_back(self, conn: _Conn) -> None:
        if self._closing or conn.released or conn.pooled:
            self._forget(conn)
            return
        conn.idle_since = time.monotonic()
        conn.pooled = True
        self._idle.setdefault(conn.key, []).append(conn)
        if self._sweep is None:
            self._sweep = conn.loop.call_later(self._idle_s, self._close_idle)
        self._wake_one()

    def _close_idle(self) -> None:
        """Closes the connections idle for `idle_s`; again later while any is idle."""
        self._sweep = None
        now = time.monotonic()
        left = False
        for conns in list(self._idle.values()):
            for conn in [c for c in conns if c.closed or now - c.idle_since >= self._idle_s]:
                self._forget(conn)
            left = left or bool(conns)
        if left and not self._closing:
            self._sweep = asyncio.get_running_loop().call_later(self._idle_s, self._close_idle)

    def _forget(self, conn: _Conn) -> None:
        """A connection of ours that is done with: closed, out of the pool, no longer
        counted (once, however often it is forgotten)."""
        if conn.transport is not None and not conn.closed:
            conn.abort()
        if conn.pooled:
            conn.pooled = False
            self._idle[conn.key].remove(conn)
        if not conn.released:
            conn.released = True
            self._released(conn.key)

    def _released(self, key: Key) -> None:
        self._open -= 1
        self._open_to[key] -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        """Wakes the first waiter that can go on now (a waiter for an origin at its own bound
        waits on, and does not take the wake-up from one that could use it)."""
        queue = self._queue
        for i, (key, waiter) in enumerate(queue):
            if not waiter.done() and (self._idle.get(key) or self._room(key, make=False)):
                del queue[i]
                waiter.set_result(None)
                break
        while queue and queue[0][1].done():
            queue.popleft()

    @property
    def closed(self) -> bool:
        return self._closing

    async def close(self) -> None:
        self._closing = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conns in list(self._idle.values()):
            for conn in list(conns):
                self._forget(conn)
