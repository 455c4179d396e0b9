"""Prometheus metrics on a local HTTP port (system.yaml ``metrics_port``; 0 = off).

Nothing is counted twice for Prometheus: a collector reads the PBX's own
counters when a scrape comes (registrar, transaction layer, driver, calls,
relay, config holder), so the hot paths pay nothing. The tiny HTTP server runs
in the server's trio tree, so a scrape reads the live state between two
messages, never in the middle of one. Loop lag is measured by a task that
sleeps a fixed period and notes how late it wakes.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger(__name__)

LAG_PERIOD = 0.1  #: seconds between loop-lag probes
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class LoopLag:
    """How late the event loop wakes a sleeping task: a histogram and the worst."""

    def __init__(self) -> None:
        self.buckets = [0] * (len(LAG_BUCKETS) + 1)
        self.count = 0
        self.total = 0.0
        self.worst = 0.0

    def observe(self, lag: float) -> None:
        i = next((i for i, b in enumerate(LAG_BUCKETS) if lag <= b), len(LAG_BUCKETS))
        self.buckets[i] += 1
        self.count += 1
        self.total += lag
        self.worst = max(self.worst, lag)

    async def run(self) -> None:
        while True:
            t0 = trio.current_time()
            await trio.sleep(LAG_PERIOD)
            self.observe(max(0.0, trio.current_time() - t0 - LAG_PERIOD))


def _counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None
             ) -> CounterMetricFamily:
    m = CounterMetricFamily(name, doc, labels=list(labels or ()))
    m.add_metric(list((labels or {}).values()), value)
    return m


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class ServerCollector(Collector):
    def __init__(self, server: Server, lag: LoopLag) -> None:
        self.server = server
        self.lag = lag

    def collect(self) -> Iterator[Any]:
        s = self.server
        reg, layer, calls = s.registrar, s.layer.counters, s.calls
        yield _gauge("minisip_registered_devices", "bindings in the location service",
                     s.location.count())
        yield _gauge("minisip_online_users", "users with at least one device registered",
                     sum(1 for _ in s.location.aors()))
        yield _counter("minisip_registrations", "REGISTERs accepted", reg.registered)
        yield _counter("minisip_auth_challenges", "401/407 challenges sent", reg.challenged)
        yield _counter("minisip_auth_refused", "requests refused after authentication",
                       reg.refused)
        yield _counter("minisip_auth_blocked", "requests refused by the brute-force guard",
                       s.guard.blocked)
        states = GaugeMetricFamily("minisip_calls", "calls in progress by state",
                                   labels=["state"])
        by_state = Counter(c.state.value for c in calls.calls.values())
        for state in ("routing", "ringing", "answered", "talking"):
            states.add_metric([state], by_state.get(state, 0))
        yield states
        ended = CounterMetricFamily("minisip_calls_ended", "calls ended, by release cause",
                                    labels=["cause"])
        for cause, n in sorted(calls.causes.items()):
            ended.add_metric([cause], n)
        yield ended
        yield _counter("minisip_calls_completed", "calls ended (all causes)", calls.completed)
        txns = GaugeMetricFamily("minisip_transactions", "SIP transactions alive",
                                 labels=["kind"])
        for kind in ("ict", "nict", "ist", "nist"):
            txns.add_metric([kind], getattr(layer, kind))
        yield txns
        yield _counter("minisip_retransmissions_sent", "Timer A/E/G retransmissions",
                       layer.retransmissions_sent)
        yield _counter("minisip_retransmissions_received", "retransmitted messages absorbed",
                       layer.retransmissions_absorbed)
        yield _counter("minisip_transaction_timeouts", "Timer B/F/H timeouts", layer.timeouts)
        yield _counter("minisip_shed_requests", "new requests refused with 503 (overload)",
                       s.driver.shed)
        yield _counter("minisip_bad_messages", "messages that did not parse",
                       s.driver.bad_messages)
        faults = CounterMetricFamily("minisip_faults", "exceptions caught at an entry point "
                                     "(the server carried on), by where", labels=["kind"])
        for kind in ("sip", "timer", "media", "control"):
            faults.add_metric([kind], s.faults.by_kind.get(kind, 0))
        yield faults
        yield _counter("minisip_transport_failures", "transactions failed by a send error or "
                       "a lost connection", layer.transport_failures)
        relayed = calls.relayed_totals()
        for key, doc in (("packets", "RTP packets relayed"), ("bytes", "RTP bytes relayed"),
                         ("lost", "RTP packets lost before reaching the relay")):
            yield _counter(f"minisip_relay_{key}", doc, relayed[key])
        yield _gauge("minisip_relay_ports_in_use", "relay ports taken from the pool",
                     calls.port_pool.in_use if calls.port_pool is not None else 0)
        h = self.lag
        cumulative, buckets = 0, []
        for bound, n in zip([*map(str, LAG_BUCKETS), "+Inf"], h.buckets):
            cumulative += n
            buckets.append((bound, cumulative))
        lag = HistogramMetricFamily("minisip_loop_lag_seconds",
                                    "how late the event loop wakes a sleeping task")
        lag.add_metric([], buckets, h.total)
        yield lag
        yield _gauge("minisip_loop_lag_worst_seconds", "the worst loop lag seen", h.worst)
        watch = s.loop_watch
        yield _counter("minisip_loop_stalls", "loop iterations over the stall threshold "
                       "(the log names each)", watch.slow)
        yield _gauge("minisip_loop_iteration_worst_seconds", "the longest loop iteration",
                     watch.worst)
        yield _counter("minisip_gc_pauses", "collections of Python's cycle collector",
                       watch.gc_pauses)
        yield _gauge("minisip_gc_pause_worst_seconds", "the longest collection", watch.gc_worst)
        holder = s.holder
        yield _counter("minisip_config_reloads", "configuration snapshots loaded",
                       holder.generation)
        yield _gauge("minisip_config_error", "1 while the last reload failed",
                     1.0 if holder.last_error else 0.0)


async def _handle(stream: trio.abc.Stream, registry: CollectorRegistry) -> None:
    try:
        data = b""
        with trio.move_on_after(5):
            while b"\r\n\r\n" not in data and len(data) < 8192:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                data += chunk
        parts = data.split(b"\r\n", 1)[0].split()
        path = parts[1].split(b"?")[0] if len(parts) >= 2 else b""
        if parts[:1] == [b"GET"] and path in (b"/", b"/metrics"):
            status, ctype = b"200 OK", CONTENT_TYPE_LATEST.encode()
            body = generate_latest(registry)
        else:
            status, ctype, body = b"404 Not Found", b"text/plain", b"try /metrics\n"
        await stream.send_all(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype
                              + b"\r\nContent-Length: " + str(len(body)).encode()
                              + b"\r\nConnection: close\r\n\r\n" + body)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    except Exception:  # one bad scrape costs that scrape
        log.exception("metrics request failed")
    finally:
        await stream.aclose()


async def serve_metrics(server: Server, host: str, port: int, *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    lag = LoopLag()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server, lag))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lag.run)
        listeners = await nursery.start(partial(trio.serve_tcp, host=host),
                                        lambda s: _handle(s, registry), port)
        log.info("metrics on http://%s:%d/metrics",
                 host, listeners[0].socket.getsockname()[1])
        task_status.started()
