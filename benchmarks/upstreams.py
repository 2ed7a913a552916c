"""Emulated CCS API, Contextual API and ad server, each run as its own process.

The emulators stand for machines elsewhere, so they must cost as little CPU as possible on the
two cores they share with the system under test: a bare asyncio protocol speaks just enough
HTTP/1.1 (keep-alive, Content-Length bodies) and each answer is written from a timer callback,
with no task per request. Latency is drawn per request from a configurable distribution
(default lognormal, p50 25 ms, p99 120 ms); fault modes make a process hang (read the request,
never answer) or answer with errors.

    python -m benchmarks.upstreams --role ccs [--latency lognormal:25:120] [--fault hang]

prints one JSON line `{"role": ..., "port": N}` once listening and exits when its standard
input closes (so a dying parent never leaves it behind). Out of band, not delayed:
`GET /__stats` (call counters), `POST /__reset`, `POST /__control` with
`{"latency": "fixed:0", "fault": "none"|"hang"|"errors", "error_rate": 1.0}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import threading
import zlib
from collections import Counter

import msgspec

ROLES = ("ccs", "contextual", "adserver")
DELAY_HEADER = "X-Emulated-Delay-Ms"
"""Every answer says how long it was held: the load generator subtracts the ad server's."""
FAULTS = ("none", "hang", "errors")

# Cohort ids look like real ones: short digit strings. A few sets, as real traffic has.
_PLATFORMS = ("dfp", "freewheel", "adswizz_keyvalue")


class Latency:
    """`lognormal:P50:P99` (ms), `fixed:MS` or `zero`."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        kind, _, rest = spec.partition(":")
        args = [float(x) for x in rest.split(":") if x]
        self._mu = self._sigma = 0.0
        self._fixed = 0.0
        self.kind = kind
        if kind == "lognormal":
            if len(args) != 2 or not 0 < args[0] < args[1]:
                raise ValueError(f"latency: expected lognormal:P50:P99 with P50 < P99, got {spec}")
            p50, p99 = args[0] / 1000, args[1] / 1000
            self._mu = math.log(p50)
            self._sigma = math.log(p99 / p50) / 2.3263478740408408  # z(0.99)
        elif kind == "fixed":
            if len(args) != 1 or args[0] < 0:
                raise ValueError(f"latency: expected fixed:MS with MS >= 0, got {spec}")
            self._fixed = args[0] / 1000
        elif kind != "zero":
            raise ValueError(f"latency: expected lognormal:P50:P99, fixed:MS or zero, got {spec}")

    def sample(self) -> float:
        if self.kind == "lognormal":
            return random.lognormvariate(self._mu, self._sigma)
        return self._fixed

    @property
    def p50_ms(self) -> float:
        if self.kind == "lognormal":
            return math.exp(self._mu) * 1000
        return self._fixed * 1000


class _Who(msgspec.Struct):
    tag: str = ""
    id: str = ""


class _CcsBody(msgspec.Struct):
    user_id: str | None = None
    alias: _Who | None = None
    aliases: list[_Who] | None = None
    events: list[msgspec.Raw] = []


class _CtxBody(msgspec.Struct):
    url: str = ""


_ccs_body = msgspec.json.Decoder(_CcsBody)
_ctx_body = msgspec.json.Decoder(_CtxBody)


def cohort_sets(n: int, seed: int, prefix: int) -> list[bytes]:
    """`n` distinct answers (JSON fragments without user_id): cohorts plus activations."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        cohorts = sorted({str(prefix + rnd.randrange(10_000)) for _ in range(rnd.randint(3, 14))})
        acts = {p: [c for c in cohorts if rnd.random() < 0.6] for p in _PLATFORMS}
        frag = msgspec.json.encode({"cohorts": cohorts, "activations": acts})
        out.append(frag[1:-1])  # without the braces, to splice a user_id in front
    return out


_CCS_SETS = cohort_sets(48, 1, 10_000)
_CTX_SETS = cohort_sets(16, 2, 90_000)
_VAST = (
    b'<?xml version="1.0" encoding="UTF-8"?><VAST version="4.0"><Ad id="bench"><InLine>'
    b"<AdSystem>bench</AdSystem><AdTitle>bench</AdTitle><Impression><![CDATA[https://t.example"
    b"/imp]]></Impression><Creatives><Creative><Linear><Duration>00:00:15</Duration>"
    b'<MediaFiles><MediaFile delivery="progressive" type="video/mp4" width="640" height="360">'
    b"<![CDATA[https://cdn.example/ad.mp4]]></MediaFile></MediaFiles></Linear></Creative>"
    b"</Creatives></InLine></Ad></VAST>"
)
_ERROR = b'{"request_id":"bench","error":{"status":500,"code":"InternalError","message":"x"}}'


def _user_id(key: str) -> str:
    """A stable Permutive user id per identity, shaped as a UUIDv4."""
    h = f"{zlib.crc32(key.encode()):08x}{zlib.adler32(key.encode()):08x}"
    h = (h * 2)[:32]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


class Emulator:
    def __init__(self, role: str, latency: Latency, fault: str, error_rate: float) -> None:
        self.role = role
        self.latency = latency
        self.fault = fault
        self.error_rate = error_rate
        self.stats: Counter[str] = Counter()
        self.urls: Counter[str] = Counter()
        self.identities: Counter[str] = Counter()
        """CCS calls per identity: two for one viewer of one view is a duplicate play event."""
        self.loop = asyncio.get_running_loop()

    def control(self, body: bytes) -> bytes:
        req = json.loads(body or b"{}")
        if "latency" in req:
            self.latency = Latency(str(req["latency"]))
        if "fault" in req:
            if req["fault"] not in FAULTS:
                raise ValueError(f"fault: expected one of {FAULTS}")
            self.fault = str(req["fault"])
        if "error_rate" in req:
            self.error_rate = float(req["error_rate"])
        return self.describe()

    def describe(self) -> bytes:
        return json.dumps(
            {
                "role": self.role,
                "latency": self.latency.spec,
                "fault": self.fault,
                "error_rate": self.error_rate,
                "stats": dict(self.stats),
                "distinct_urls": len(self.urls),
                "identities": len(self.identities),
                "repeat_identities": sum(1 for n in self.identities.values() if n > 1),
                "ccs_events": self.stats["ccs_events"],
            }
        ).encode()

    def answer(self, method: str, target: str, body: bytes) -> tuple[int, bytes, bytes] | None:
        """(status, content type, body), or None to hang."""
        path, _, query = target.partition("?")
        if path.startswith("/__"):
            if path == "/__stats":
                return 200, b"application/json", self.describe()
            if path == "/__reset" and method == "POST":
                self.stats.clear()
                self.urls.clear()
                self.identities.clear()
                return 200, b"application/json", self.describe()
            if path == "/__control" and method == "POST":
                return 200, b"application/json", self.control(body)
            return 404, b"text/plain", b"not found"
        self.stats["requests"] += 1
        if self.fault == "hang":
            self.stats["hung"] += 1
            return None
        if self.fault == "errors" and random.random() < self.error_rate:
            self.stats["errors"] += 1
            return 500, b"application/json", _ERROR
        if path.endswith("/ccs/v1/segmentation") and method == "POST":
            self.stats["ccs"] += 1
            try:
                who = _ccs_body.decode(body)
            except msgspec.DecodeError:
                return 400, b"application/json", _ERROR
            key = who.user_id or (
                f"{who.alias.tag}:{who.alias.id}"
                if who.alias
                else f"{who.aliases[0].tag}:{who.aliases[0].id}"
                if who.aliases
                else ""
            )
            self.identities[key] += 1
            self.stats["ccs_events"] += len(who.events)
            frag = _CCS_SETS[zlib.crc32(key.encode()) % len(_CCS_SETS)]
            uid = who.user_id or _user_id(key)
            return 200, b"application/json", b'{"user_id":"%s",%s}' % (uid.encode(), frag)
        if path.endswith("/ctx/v1/segment") and method == "POST":
            self.stats["contextual"] += 1
            try:
                url = _ctx_body.decode(body).url
            except msgspec.DecodeError:
                return 400, b"application/json", _ERROR
            self.urls[url] += 1
            frag = _CTX_SETS[zlib.crc32(url.encode()) % len(_CTX_SETS)]
            return 200, b"application/json", b"{%s}" % frag
        self.stats["ad_requests"] += 1
        if "permutive%3D" in query or "prmtvctx%3D" in query:
            self.stats["ad_requests_enriched"] += 1
            # Behavioral cohort ids start with 1, contextual ones with 9 (see `cohort_sets`);
            # merged key-values put behavioral first.
            if "permutive%3D1" in query:
                self.stats["ad_requests_behavioral"] += 1
        return 200, b"application/xml", _VAST


_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 500: b"Internal Server Error"}


class _Http(asyncio.Protocol):
    """One keep-alive connection; requests answered in order, one at a time."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.hung = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy and not self.hung:
            self._next()

    def _next(self) -> None:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = buf[:end].decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            self._close()
            return
        method, target = parts[0], parts[1]
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            lname = name.strip().lower()
            if lname == "content-length":
                length = int(value.strip())
            elif lname == "connection" and value.strip().lower() == "close":
                close = True
        total = end + 4 + length
        if len(buf) < total:
            return
        body = buf[end + 4 : total]
        self.buf = buf[total:]
        result = self.emu.answer(method, target, body)
        if result is None:
            self.hung = True  # never answer; the client gives up and closes
            return
        self.busy = True
        delay = 0.0 if target.startswith("/__") else self.emu.latency.sample()
        if delay <= 0:
            self._send(result, close, delay)
        else:
            self.emu.loop.call_later(delay, self._send, result, close, delay)

    def _send(self, result: tuple[int, bytes, bytes], close: bool, delay: float) -> None:
        t = self.transport
        self.busy = False
        if t is None or t.is_closing():
            return
        status, ctype, body = result
        t.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"%s: %.3f\r\n%s\r\n%s"
            % (
                status,
                _REASONS.get(status, b"Other"),
                ctype,
                len(body),
                DELAY_HEADER.encode(),
                delay * 1000,
                b"Connection: close\r\n" if close else b"",
                body,
            )
        )
        if close:
            t.close()
        elif self.buf:
            self._next()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(role: str, latency: Latency, fault: str, error_rate: float, port: int) -> None:
    loop = asyncio.get_running_loop()
    emu = Emulator(role, latency, fault, error_rate)
    server = await loop.create_server(
        lambda: _Http(emu), "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(json.dumps({"role": role, "port": bound}), flush=True)
    stop = asyncio.Event()
    threading.Thread(target=_wait_stdin, args=(loop, stop), daemon=True).start()
    async with server:
        await stop.wait()


def _wait_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    try:
        sys.stdin.buffer.read()
    finally:
        loop.call_soon_threadsafe(stop.set)


def new_loop(kind: str = "uvloop") -> asyncio.AbstractEventLoop:
    """uvloop when asked for and installed, else the default asyncio loop."""
    if kind == "uvloop":
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
        except ImportError:
            pass
    return asyncio.new_event_loop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.upstreams")
    p.add_argument("--role", choices=ROLES, required=True)
    p.add_argument("--latency", default="lognormal:25:120")
    p.add_argument("--fault", choices=FAULTS, default="none")
    p.add_argument("--error-rate", type=float, default=1.0)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    a = p.parse_args(argv)
    try:
        latency = Latency(a.latency)
    except ValueError as e:
        p.error(str(e))
    with asyncio.Runner(loop_factory=lambda: new_loop(a.loop)) as runner:
        runner.run(serve(a.role, latency, a.fault, a.error_rate, a.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
