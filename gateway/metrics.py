"""Prometheus metrics: what a site's monitoring wants to see of the gateway, gathered when scraped (the records
part through gateway.health, which `campusgw status` reads too)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from gateway.health import devices, open_alarms, response_times

# Seconds from an alarm to a person's acknowledgement and reset: the standards' response times.
RESPONSE_BUCKETS = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def response_histogram(name: str, documentation: str, seconds: list[float]) -> HistogramMetricFamily:
    """A cumulative histogram: alarms are records and are never purged, so the counts only grow."""
    buckets = [(str(bound), float(sum(1 for s in seconds if s <= bound))) for bound in RESPONSE_BUCKETS]
    buckets.append(("+Inf", float(len(seconds))))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=sum(seconds))


class GatewayCollector(Collector):
    """Reads the parts of this process (what `parts()` returns) and the records on every scrape."""

    def __init__(self, sessions: sessionmaker[Session], parts: Callable[[], dict[str, Any]]) -> None:
        self.sessions = sessions
        self.parts = parts

    def collect(self) -> Iterator[Any]:
        parts = self.parts()
        up = GaugeMetricFamily("campusgw_part_up", "1 while a part of this gateway process works", labels=["part"])
        for name, ok in parts.get("up", {}).items():
            up.add_metric([name], 1.0 if ok else 0.0)
        yield up
        outbox = parts.get("outbox")
        if outbox is not None:
            yield GaugeMetricFamily("campusgw_outbox_queued", "events in the outbox, not yet recorded by the rules "
                                    "service", value=outbox.queued)
            yield GaugeMetricFamily("campusgw_outbox_unconfirmed", "events sent, awaiting the rules service's "
                                    "confirmation", value=outbox.unconfirmed)
            yield GaugeMetricFamily("campusgw_outbox_waiting_in_memory", "events held in memory while the outbox "
                                    "file cannot be written", value=outbox.waiting_in_memory)
            yield CounterMetricFamily("campusgw_outbox_published", "events the rules service confirmed",
                                      value=outbox.published)
            yield CounterMetricFamily("campusgw_outbox_resent", "events sent again (unconfirmed after a reconnect "
                                      "or a stall)", value=outbox.resent)
            yield CounterMetricFamily("campusgw_outbox_shed", "telemetry events dropped over the disk bound",
                                      value=outbox.shed)
        rules = parts.get("rules")
        if rules is not None:
            events = CounterMetricFamily("campusgw_rules_events", "events the rules service took", labels=["result"])
            events.add_metric(["recorded"], rules["processed"])
            events.add_metric(["duplicate"], rules["duplicates"])
            events.add_metric(["rejected"], sum(rules["rejected"].values()))
            events.add_metric(["quarantined"], rules["quarantined"])
            yield events
        police = parts.get("police")
        if police is not None:
            yield CounterMetricFamily("campusgw_police_frames_sent", "DC-09 frames sent to alarm centres",
                                      value=police["sent"])
            yield CounterMetricFamily("campusgw_police_frames_acked", "DC-09 frames the alarm centre acknowledged",
                                      value=police["acked"])
            yield GaugeMetricFamily("campusgw_police_pending", "reports not yet acknowledged by the alarm centre",
                                    value=police["pending"])
            paths = GaugeMetricFamily("campusgw_police_path_up", "1 while an alarm-centre path answers",
                                      labels=["path"])
            for name, up in police["paths_up"].items():
                paths.add_metric([name], float(up))
            yield paths
        drivers = parts.get("drivers")
        if drivers is not None:
            restarts = CounterMetricFamily("campusgw_driver_restarts", "driver restarts by the supervisor",
                                           labels=["driver"])
            fps = GaugeMetricFamily("campusgw_camera_fps", "frames analysed per second of a camera",
                                    labels=["camera"])
            for name, health in drivers.items():
                restarts.add_metric([name], health.get("restarts", 0))
                for camera, state in health.get("cameras", {}).items():
                    fps.add_metric([camera], float(state["fps"]))
            yield restarts
            yield fps
        with self.sessions() as session:
            found, opened, (acked, reset) = devices(session), open_alarms(session), response_times(session)
        online = GaugeMetricFamily("campusgw_device_online", "1 online, 0 offline, -1 not heard from yet",
                                   labels=["device", "kind"])
        for device in found:
            online.add_metric([device.id, device.kind], -1.0 if device.online is None else float(device.online))
        yield online
        alarms = GaugeMetricFamily("campusgw_open_alarms", "open alarms", labels=["state", "priority"])
        for (state, priority), count in opened.items():
            alarms.add_metric([state, str(priority)], count)
        yield alarms
        yield response_histogram("campusgw_alarm_ack_seconds", "alarm raised to acknowledged by a person", acked)
        yield response_histogram("campusgw_alarm_reset_seconds", "alarm raised to reset by a person", reset)


def render(collector: GatewayCollector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
