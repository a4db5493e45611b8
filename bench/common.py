"""What the bench scripts share: statistics, /proc readers, waiting, a raw-socket SSE client, and report bits."""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from tests.support import MosquittoBroker

T = TypeVar("T")


# -- statistics and report bits -----------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency_stats(values: list[float], width: int = 8, empty_max: float = 0.0) -> str:
    """p50, p95, p99 and max of `values`, each `width` wide with one decimal; `empty_max` as max of none."""
    worst = max(values) if values else empty_max
    return "".join(f"{percentile(values, p):{width}.1f}" for p in (50, 95, 99)) + f"{worst:{width}.1f}"


def print_latency_table(rows: list[tuple[str, list[float]]], poll_ms: int, link: str | None = None) -> None:
    """A table of latencies in ms, a row per (name, values): n, p50, p95, p99, max, the poll period and,
    given `link`, a `link` column."""
    header_link, row_link = ("", "") if link is None else (f"  {'link'}", f"  {link}")
    print(f"{'latency, ms':36}{'n':>5}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}{'poll':>9}{header_link}")
    for name, values in rows:
        print(f"{name:36}{len(values):5d}{latency_stats(values)}{poll_ms:>6} ms{row_link}")


# -- /proc ----------------------------------------------------------------------------------


def cpu_of(pid: int | str, task: str | None = None) -> float:
    """User + system CPU seconds of a process, or of one of its threads (`task`), from /proc."""
    path = f"/proc/{pid}/task/{task}/stat" if task else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """VmRSS of a process in MiB, from /proc; NaN if it has none."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- waiting --------------------------------------------------------------------------------


def wait_until(condition: Callable[[], object], timeout: float, what: str | Callable[[], str],
               interval: float = 0.01) -> None:
    """Call `condition` every `interval` s until it returns something true; RuntimeError after `timeout` s.

    The error says "timed out after Ns waiting for <what>"; a callable `what` gives the whole message
    instead, made when the time is up (so it can tell the last state seen).
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(what() if callable(what) else f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def wait_matching(q: queue.Queue[T], match: Callable[[T], bool], timeout: float) -> T | None:
    """The first item in `q` that matches, dropping the others; None after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            item = q.get(timeout=left)
        except queue.Empty:
            return None
        if match(item):
            return item


# -- brokers --------------------------------------------------------------------------------


def start_mosquitto(workdir: Path) -> MosquittoBroker | None:
    """Our own Mosquitto (tests.support.MosquittoBroker) in `workdir`/mosquitto, started; None if it is not
    installed."""
    (workdir / "mosquitto").mkdir()
    mosquitto = MosquittoBroker(workdir / "mosquitto")
    if not mosquitto.binary:
        return None
    mosquitto.start()
    return mosquitto


def gateway_config(site: str, data_dir: Path, broker_url: str) -> dict[str, Any]:
    """The site, gateway, broker and console sections of a bench gateway's config (console on a free port);
    `broker_url` "embedded" for the gateway's own amqtt on a free port."""
    broker: dict[str, Any] = ({"url": "embedded", "embedded_port": 0} if broker_url == "embedded"
                              else {"url": broker_url})
    return {
        "site": {"id": site, "name": "Bench School", "timezone": "Asia/Shanghai"},
        "gateway": {"id": "gw1", "data_dir": str(data_dir), "log_level": "warning"},
        "broker": broker,
        "console": {"host": "127.0.0.1", "port": 0},
    }


# -- the console's SSE stream ---------------------------------------------------------------


class SseClient:
    """Reads an SSE stream of the console over a raw socket in a thread.

    A raw socket, not an HTTP client library, so close() really closes the connection (the console then
    ends the stream cleanly) and nothing buffers between the socket and the clock: the arrival time is
    taken right after recv() returns, before any parsing. `snapshot` is set at the first `event: snapshot`.
    Subclasses decide what to record: on_event() gets every data line with its event name and arrival time.
    Set a subclass's own attributes before calling this __init__, which starts the reading thread.
    """

    def __init__(self, url: str, token: str | None = None) -> None:
        parsed = urlsplit(url)
        self.status = ""  # the HTTP status line, once read
        self.snapshot = threading.Event()
        self._sock = socket.create_connection((parsed.hostname, parsed.port or 80), timeout=10)
        self._sock.settimeout(None)
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self._sock.sendall(f"GET {parsed.path} HTTP/1.1\r\nHost: {parsed.netloc}\r\n{auth}"
                           "Accept: text/event-stream\r\n\r\n".encode())
        self._thread = threading.Thread(target=self._run, name="sse", daemon=True)
        self._thread.start()

    def on_event(self, event: str, data: str, now: float) -> None:
        """One `data:` line (`data`: what follows the colon) of an `event:` (`event`), arrived at `now`."""

    def _run(self) -> None:
        buffer, event = b"", ""
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            now = time.time()
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            # Chunked transfer encoding: each SSE message is one chunk, so the chunk-size lines fall
            # between messages and match neither prefix below.
            for raw in lines:
                line = raw.rstrip(b"\r").decode()
                if not self.status:
                    self.status = line
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    if event == "snapshot":
                        self.snapshot.set()
                    self.on_event(event, line[5:], now)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)


class NoAliases(yaml.SafeDumper):
    """Site files refuse YAML anchors (gateway.config_file): every repeated value written out."""

    def ignore_aliases(self, data: Any) -> bool:
        return True
