"""The Mosquitto bridge section that sends one school's events, alarms and lockdown up to the district's NATS
cluster, made from the site config so it cannot name another school's topics.

What a real district needs and the old hand-written section lacked:
- a unique `remote_clientid` per site and gateway: two mini-PCs cloned from one image otherwise share a
  session at the district and replace each other's (seen, with duplicates, in a run without any failure);
- `try_private false` and `bridge_protocol_version mqttv311`: NATS speaks MQTT 3.1.1 and no bridge extension;
- `cleansession false`: the district keeps what it has not confirmed across a reconnect;
- `notification_topic` under the site's own topics: NATS refuses `$SYS/...`, Mosquitto's default;
- every topic with the site's id, never `+` in its place: NATS drops a topic the school's credentials may not
  publish silently, with a PUBACK, so a wrong topic would be lost without a word;
- every node of the cluster as an address, each school starting at its own node (the list rotated by a hash of
  the site id: the schools spread over the nodes, and a node lost moves a third of them, not all) and staying
  where it is once failed over (`round_robin true`: with `false` every bridge went back to its first node when
  that returned, a second reconnect and resend for each; measured by bench/district), with a short restart
  backoff.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import ID_PATTERN

UP_TOPICS = ("{site}/+/+/evt/#", "{site}/+/+/availability", "{site}/rules/alarms/#", "{site}/rules/lockdown",
             "{site}/rules/police/paths", "{site}/rules/incidents/#",
             "{site}/rules/reports/#", "{site}/rules/notices/#")


@dataclass(frozen=True)
class BridgeSettings:
    site: str
    gateway: str
    addresses: list[str]  # host:port of each node's MQTT listener
    username: str | None = None
    password: str | None = None
    cafile: str | None = None  # TLS to the district, with its CA
    keepalive_s: int = 30
    police_evidence: bool = False  # police.evidence.topic: the alarms' evidence up too, for the police platform


def spread(site: str, addresses: list[str]) -> list[str]:
    """The cluster's addresses starting at the site's own node: the same for a site every time (a stable hash, not
    Python's salted one), different across sites."""
    import zlib

    start = zlib.crc32(site.encode()) % len(addresses)
    return addresses[start:] + addresses[:start]


def state_topic(site: str) -> str:
    """Where Mosquitto says whether its bridge to the district is up (1) or down (0), retained."""
    return f"campus/v1/{site}/bridge/district"


def bridge_section(s: BridgeSettings) -> str:
    import re

    for what, value in (("site", s.site), ("gateway", s.gateway)):
        if not re.match(ID_PATTERN, value):
            raise ValueError(f"{what} id {value!r} is not an id ([a-z0-9-], starting with a letter or digit)")
    if not s.addresses:
        raise ValueError("no address of the district's cluster")
    for address in s.addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or " " in address:
            raise ValueError(f"address {address!r} is not host:port")
    lines = [
        f"connection district-{s.site}",
        "address " + " ".join(spread(s.site, s.addresses)),
        "round_robin true",
        f"remote_clientid campusgw-{s.site}-{s.gateway}",
        "try_private false",
        "bridge_protocol_version mqttv311",
        "cleansession false",
        f"keepalive_interval {s.keepalive_s}",
        "restart_timeout 1 15",
        f"notification_topic {state_topic(s.site)}",
    ]
    if s.username:
        lines.append(f"remote_username {s.username}")
    if s.password:
        lines.append(f"remote_password {s.password}")
    if s.cafile:
        lines.append(f"bridge_cafile {s.cafile}")
    lines += [f"topic campus/v1/{pattern.format(site=s.site)} out 1" for pattern in UP_TOPICS]
    if s.police_evidence:
        lines.append(f"topic campus/v1/{s.site}/rules/police/evidence out 1")
    lines.append(f"topic campus/v1/{s.site}/district/# in 1")  # down: the district's acknowledgements
    return "\n".join(lines) + "\n"
