"""The sidecar's own metrics, registered beside the enricher's on the same registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from plugin.observe.metrics import LATENCY_BUCKETS
from plugin.observe.tally import DeferredCounter, DeferredHistogram

EVENT_STATES = ("queued", "sent", "retried", "uncertain", "dropped", "unconsented", "claimed")
CLOSE_REASONS = (
    "header_timeout",
    "body_timeout",
    "max_connections",
    "malformed",
    "client_disconnect",
)


class ServeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.events = Counter(
            "cohortkv_events_total",
            "Player events by state: queued, sent, retried (per retry), uncertain (the CCS API"
            " may have processed them: a timeout after sending or a 5xx other than 503; not"
            " sent again, settled), dropped, unconsented (refused at accept time, never"
            " queued), claimed (redis queue: taken over from a replica that stopped before"
            " settling them).",
            ["state"],
            registry=r,
        )
        self.events_dropped = Counter(
            "cohortkv_events_dropped_total",
            "Dropped (or refused) player events by reason: queue_full, unavailable (redis queue"
            " unreachable: refused with 503), rejected (4xx), exhausted, shutdown (memory"
            " queue), corrupt (an entry in Redis that does not decode).",
            ["reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "cohortkv_events_queue_depth",
            "Player events accepted and not yet delivered or dropped.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.stream_length = Gauge(
            "cohortkv_events_stream_length",
            "Redis event queue: events in the streams, not settled yet (read or not), fleet-wide.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.stream_pending = Gauge(
            "cohortkv_events_stream_pending",
            "Redis event queue: events read by a replica and not settled yet, fleet-wide.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.shed = Counter(
            "cohortkv_shed_total",
            "Requests not enriched because too many enrichments were in flight"
            " (proxy: forwarded unenriched; enrich_api: 503).",
            ["reason"],
            registry=r,
        )
        self.rejected = Counter(
            "cohortkv_http_rejected_total",
            "Requests refused by a size limit.",
            ["limit"],
            registry=r,
        )
        self.proxy_requests = DeferredCounter(  # counted on every proxied request
            "cohortkv_proxy_requests_total",
            "Proxied ad requests by upstream and outcome (2xx..5xx, timeout, error).",
            ["upstream", "outcome"],
            registry=r,
        )
        self.proxy_seconds = DeferredHistogram(
            "cohortkv_proxy_upstream_seconds",
            "Ad server time to response headers, by upstream.",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.internal_errors = Counter(
            "cohortkv_serve_errors_total",
            "Unexpected errors in the sidecar's own code, by route; each is logged.",
            ["route"],
            registry=r,
        )
        self.connections_closed = Counter(
            "cohortkv_http_connections_closed_total",
            "Client connections the sidecar closed or refused itself, or lost mid-request, by"
            " reason: header_timeout (request head not complete within serve.header_timeout_s),"
            " body_timeout (body not complete within serve.body_timeout_s, answered 408),"
            " max_connections (refused at accept, serve.max_connections open), malformed (HTTP"
            " the parser rejects, answered 400), client_disconnect (the client went away"
            " before its whole body had arrived).",
            ["reason"],
            registry=r,
        )
        self.connections = Gauge(
            "cohortkv_http_connections",
            "Client connections open now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections_max = Gauge(
            "cohortkv_http_connections_max",
            "The effective serve.max_connections (0 in the file: half the open-file limit); with"
            " several workers, the sum of theirs (each worker has its own).",
            registry=r,
            multiprocess_mode="livesum",
        )
        for reason in CLOSE_REASONS:
            self.connections_closed.labels(reason)
        for state in EVENT_STATES:
            self.events.labels(state)
