"""The bookkeeping of polling Modbus modules, without IO: what a module's polls add up to (online, offline
after `offline_after` failures in a row, counted), and which request an answer belongs to.

The driver does the IO: it asks `ModulePolls` whether a module is free for another read, tells it how each
poll ended, and sends or logs what it says changed; `Requests` hands out Modbus TCP transaction ids and finds
the owner of an answer. Tested with plain values (tests/unit/test_modbus_polling.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
Change = Literal["online", "offline"] | None  # what a poll's end changed about the module


@dataclass
class ModulePolls:
    """One module's polls: at most one read outstanding, failures in a row, online or not, counters."""

    offline_after: int
    online: bool | None = None  # None: not heard from yet
    failures: int = 0  # in a row
    was_offline: bool = False  # it has been offline: presses found on its return were made meanwhile
    pending: int | None = None  # the transaction of the read it still owes an answer to
    polls: int = 0
    errors: int = 0
    last_error: str | None = None

    def sent(self, transaction: int | None = None) -> None:
        """A read went out (TCP: with its transaction, until answered or given up)."""
        self.polls += 1
        self.pending = transaction

    def answered(self) -> Change:
        """A reading came back: the failures end and the module is online."""
        self.pending = None
        self.failures = 0
        if self.online is True:
            return None
        self.online = True
        return "online"

    def failed(self, error: str) -> Change:
        """The read failed (no answer, a refusal, a broken frame): counted; offline after `offline_after` in a
        row."""
        self.pending = None
        self.errors += 1
        self.last_error = error
        self.failures += 1
        return self.went_offline() if self.failures >= self.offline_after else None

    def went_offline(self) -> Change:
        """Offline now (too many failures, or its line could not be opened)."""
        if self.online is False:
            return None
        self.online = False
        self.was_offline = True
        return "offline"

    def side_error(self, error: str) -> None:
        """An error beside the reads (a latch clear refused): counted and shown, the module stays as it is."""
        self.errors += 1
        self.last_error = error


@dataclass
class Requests(Generic[T]):
    """Modbus TCP transaction ids (1..65535, then round again) and what each outstanding request is for."""

    last: int = 0
    owners: dict[int, T] = field(default_factory=dict)

    def new(self, owner: T) -> int:
        if len(self.owners) >= 0xFFFF:
            raise RuntimeError("65,535 Modbus requests outstanding on one connection")
        self.last = self.last % 0xFFFF + 1
        while self.last in self.owners:  # 65,535 outstanding never happens; never reuse a live id anyway
            self.last = self.last % 0xFFFF + 1
        self.owners[self.last] = owner
        return self.last

    def answered(self, transaction: int) -> T | None:
        """The owner of an answer (or of a request given up on), once; None for one unknown or already done."""
        return self.owners.pop(transaction, None)

    def clear(self) -> None:
        self.owners.clear()
