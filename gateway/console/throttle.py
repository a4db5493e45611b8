"""Login throttling by client address, so wrong passwords from one place cannot lock anyone out elsewhere.

Two counters, both kept in memory (a restart forgets them, which gives an attacker nothing: a restart takes
longer than a lock):

- per (name typed, address): after MAX_FAILURES wrong passwords in a row, that name is locked *from that
  address* for LOCKOUT (GB 50396: at most 5 wrong attempts). The admin at the gatehouse is not locked out
  by someone guessing from another computer.
- per address: after ADDRESS_FAILURES wrong passwords within LOCKOUT, whatever names they tried, the address
  may not try any name for LOCKOUT (password spraying).

The name typed counts whether or not such a user exists, so a lock says nothing about who exists. A locked
attempt is answered at once, without hashing, so a flood costs no CPU. Pure: the caller gives the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

MAX_FAILURES = 5  # wrong passwords in a row for one name from one address (GB 50396: <= 5)
ADDRESS_FAILURES = 20  # wrong passwords from one address, any names, within LOCKOUT_S
LOCKOUT_S = 15 * 60.0
MAX_ENTRIES = 10_000  # addresses and (name, address) pairs remembered; the oldest go first
K = TypeVar("K")


@dataclass
class _Counter:
    failures: int = 0
    first_at: float = 0.0  # the first failure counted
    locked_until: float = 0.0
    reported: bool = False  # the lock's first refusal was audited; later ones are not (a flood is one row)


@dataclass(frozen=True)
class Lock:
    """A refusal: how long is left, and whether it is the first refusal of this lock (audit it once)."""

    seconds_left: float
    first: bool


class LoginThrottle:
    def __init__(self) -> None:
        self._pairs: dict[tuple[str, str], _Counter] = {}
        self._addresses: dict[str, _Counter] = {}

    def check(self, username: str, address: str, now: float) -> Lock | None:
        """None if this address may try this name now; else the lock that refuses it."""
        locks = [c for c in (self._pairs.get((username, address)), self._addresses.get(address))
                 if c is not None and c.locked_until > now]
        if not locks:
            return None
        counter = max(locks, key=lambda c: c.locked_until)
        first, counter.reported = not counter.reported, True
        return Lock(counter.locked_until - now, first)

    def failed(self, username: str, address: str, now: float) -> None:
        """A wrong password (or an unknown or disabled name) from this address."""
        self._count(self._pairs, (username, address), MAX_FAILURES, now)
        self._count(self._addresses, address, ADDRESS_FAILURES, now)

    def succeeded(self, username: str, address: str) -> None:
        self._pairs.pop((username, address), None)

    def _count(self, table: dict[K, _Counter], key: K, limit: int, now: float) -> None:
        counter = table.get(key)
        if counter is None or now - counter.first_at > LOCKOUT_S:  # old failures are forgotten
            if len(table) >= MAX_ENTRIES:
                self._forget(table, now)
            counter = table[key] = _Counter(first_at=now)
        counter.failures += 1
        if counter.failures >= limit:
            counter.failures, counter.first_at = 0, now
            counter.locked_until, counter.reported = now + LOCKOUT_S, False

    @staticmethod
    def _forget(table: dict[K, _Counter], now: float) -> None:
        """Make room: drop what is neither locked nor recent, else the oldest entry."""
        stale = [k for k, c in table.items() if c.locked_until <= now and now - c.first_at > LOCKOUT_S]
        for key in stale or [next(iter(table))]:
            del table[key]

