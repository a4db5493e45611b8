"""The shipped MQTT ACL (gateway/mosquitto.acl, Mosquitto's acl_file format), read and applied in Python.

The embedded broker enforces the same file Mosquitto does, so a part has the
same rights whichever broker a site runs. Pure: text in, rules out; a topic
and an action in, yes or no out.
"""

from __future__ import annotations

from importlib import resources
from typing import Literal

Access = Literal["read", "write"]
Rules = dict[str, list[tuple[str, str]]]  # user -> [(read|write|readwrite, topic filter)]

USER_PREFIX = "campusgw-"
# The users of the shipped ACL: one per part of the gateway, and a read-only one for Home Assistant and tools.
PARTS = ("drivers", "rules", "console", "reader")


class AclError(ValueError):
    pass


def parse(text: str) -> Rules:
    """Mosquitto's `user NAME` / `topic [read|write|readwrite] FILTER` lines; other lines are errors."""
    rules: Rules = {}
    user: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if words[0] == "user" and len(words) == 2:
            user = words[1]
            rules.setdefault(user, [])
        elif words[0] == "topic" and len(words) in (2, 3) and user is not None:
            access, topic = (words[1], words[2]) if len(words) == 3 else ("readwrite", words[1])
            if access not in ("read", "write", "readwrite"):
                raise AclError(f"line {number}: expected read, write or readwrite, got {access!r}")
            rules[user].append((access, topic))
        else:
            raise AclError(f"line {number}: expected 'user NAME' or 'topic [read|write|readwrite] FILTER' after a "
                           f"user, got {line!r}")
    return rules


def shipped() -> Rules:
    return parse(resources.files("gateway").joinpath("mosquitto.acl").read_text(encoding="utf-8"))


def _covers(pattern: str, topic: str) -> bool:
    """Whether ACL filter `pattern` covers `topic`, itself a topic or a subscription filter: a '+' or '#' in
    the topic must be matched by one in the pattern (subscribing to '#' is not covered by 'a/+')."""
    want, have = pattern.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have):
            return False
        if level == "+":
            if have[i] == "#":
                return False
            continue
        if level != have[i]:
            return False
    return len(want) == len(have)


def allowed(rules: Rules, user: str | None, access: Access, topic: str) -> bool:
    """May `user` publish to (write) or subscribe to / receive from (read) `topic`? Nobody is anonymous."""
    if user is None or user not in rules or not topic or "\0" in topic:
        return False
    return any(access in kind and _covers(pattern, topic) for kind, pattern in rules[user])
