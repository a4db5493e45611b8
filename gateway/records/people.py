"""Students and staff in the records: the CSV import (people and their cards) and the staff who may host a
visitor. Visits are gateway.records.visits; the watch list gateway.records.watchlist.

Database functions only, no web: the caller owns the transaction (one `sessions.begin()`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from drivers.card_formats import CardFormatError, normalise_credential
from gateway.records.models import Credential, Person

MAX_CSV_ROWS = 50_000
T = TypeVar("T")


COLUMNS = ("kind", "external_id", "name", "group", "card")
REQUIRED_COLUMNS = ("kind", "external_id", "name")
KINDS = ("student", "staff")


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    cards: int = 0  # cards assigned or moved
    errors: list[str] = field(default_factory=list)  # "line 4, column 'card': ..."; nothing imported if any

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class _Row:
    line: int
    kind: str
    external_id: str
    name: str
    group: str | None
    card: str | None


def decode_csv(data: bytes) -> str:
    """A CSV as schools have them: UTF-8 (with or without Excel's BOM), else GB18030 (Excel on Chinese Windows
    saves GBK, which GB18030 contains)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("gb18030")


def import_people(session: Session, text: str, now: datetime) -> ImportResult:
    """Students and staff from CSV (header: kind, external_id, name, and optionally group, card), upserted by
    external_id. Every line is checked first; a file with any error imports nothing and says, for each, the
    line and column. People not in the file are left as they are (a file may hold one class). An empty card
    cell leaves a person's cards as they are; a new card replaces their old one, which is revoked (a reader
    then names it as revoked rather than unknown)."""
    result = ImportResult()
    rows = _parse(text, result.errors)
    if result.errors:
        return result
    ids = [r.external_id for r in rows]
    existing = {p.external_id: p for chunk in _chunks(ids) for p in session.scalars(
        select(Person).where(Person.external_id.in_(chunk)))}
    by_value = {c.value: c for chunk in _chunks([r.card for r in rows if r.card]) for c in session.scalars(
        select(Credential).where(Credential.value.in_(chunk)))}
    person_ids = [p.id for p in existing.values()]
    cards_of: dict[int, list[Credential]] = {}
    for chunk in _chunks(person_ids):
        for c in session.scalars(select(Credential).where(Credential.person_id.in_(chunk), Credential.kind == "card",
                                                          Credential.revoked.is_(False))):
            cards_of.setdefault(c.person_id, []).append(c)
    wanted_by_person = {existing[r.external_id].id: r.card for r in rows if r.external_id in existing and r.card}
    for r in rows:
        if not r.card or r.card not in by_value:
            continue
        held = by_value[r.card]
        mine = r.external_id in existing and held.person_id == existing[r.external_id].id
        if mine or held.revoked:
            continue
        # The card is someone else's: fine only if this file gives them another card (cards swapped or moved).
        if wanted_by_person.get(held.person_id, r.card) != r.card:
            continue
        owner = session.get(Person, held.person_id)
        who = f"{owner.name} ({owner.external_id or owner.kind})" if owner else f"person {held.person_id}"
        result.errors.append(f"line {r.line}, column 'card': card {r.card} belongs to {who}; take it from them "
                             f"first (give them another card in this file)")
    if result.errors:
        return result

    # Write: people first, then cards (old ones revoked before new ones are given, so swaps work).
    people: dict[str, Person] = {}
    for r in rows:
        person = existing.get(r.external_id)
        if person is None:
            person = Person(kind=r.kind, name=r.name, group_name=r.group, external_id=r.external_id, active=True,
                            created_at=now, updated_at=now)
            session.add(person)
            result.created += 1
        elif (person.kind, person.name, person.group_name, person.active) != (r.kind, r.name, r.group, True):
            person.kind, person.name, person.group_name, person.active = r.kind, r.name, r.group, True
            person.updated_at = now
            result.updated += 1
        else:
            result.unchanged += 1
        people[r.external_id] = person
    session.flush()
    for r in rows:
        if not r.card:
            continue
        person = people[r.external_id]
        for old in cards_of.get(person.id, []):
            if old.value != r.card:
                old.revoked = True
    session.flush()
    for r in rows:
        if not r.card:
            continue
        person = people[r.external_id]
        row = by_value.get(r.card)
        if row is None:
            session.add(Credential(value=r.card, kind="card", person_id=person.id, revoked=False, created_at=now))
            result.cards += 1
        elif row.person_id != person.id or row.revoked:
            row.person_id, row.revoked, row.visit_id = person.id, False, None
            row.valid_from = row.valid_until = None
            result.cards += 1
    session.flush()
    return result


def _parse(text: str, errors: list[str]) -> list[_Row]:
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = next(reader)
    except StopIteration:
        errors.append("line 1: the file is empty (expected a header: " + ", ".join(COLUMNS) + ")")
        return []
    except csv.Error as exc:
        errors.append(f"line 1: not a CSV header: {exc}")
        return []
    names = [h.strip().lower() for h in header]
    for name in names:
        if name not in COLUMNS:
            errors.append(f"line 1: unknown column '{name}' (expected: {', '.join(COLUMNS)})")
    for name in REQUIRED_COLUMNS:
        if name not in names:
            errors.append(f"line 1: missing column '{name}' (expected: {', '.join(COLUMNS)})")
    for name in set(names):
        if names.count(name) > 1:
            errors.append(f"line 1: column '{name}' is there twice")
    if errors:
        return []
    rows: list[_Row] = []
    first_line: dict[tuple[str, str], int] = {}
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(f"line {reader.line_num}: {exc}")
            break
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(rows) >= MAX_CSV_ROWS:
            errors.append(f"line {line}: more than {MAX_CSV_ROWS} people in one file; split it")
            break
        if len(cells) > len(names):
            errors.append(f"line {line}: {len(cells)} fields, but the header has {len(names)} columns")
            continue
        value = {n: (cells[i].strip() if i < len(cells) else "") for i, n in enumerate(names)}

        def bad(column: str, problem: str, line: int = line) -> None:
            errors.append(f"line {line}, column '{column}': {problem}")

        kind = value["kind"].lower()
        if kind not in KINDS:
            bad("kind", f"expected student or staff, got '{value['kind']}'")
        external_id = value["external_id"]
        if not external_id:
            bad("external_id", "empty (a student or staff number is needed to update the person later)")
        elif len(external_id) > 64:
            bad("external_id", "longer than 64 characters")
        elif ("external_id", external_id) in first_line:
            bad("external_id", f"{external_id} is already on line {first_line['external_id', external_id]}")
        else:
            first_line["external_id", external_id] = line
        name = value["name"]
        if not name:
            bad("name", "empty")
        elif len(name) > 100:
            bad("name", "longer than 100 characters")
        group = value.get("group") or None
        if group is not None and len(group) > 64:
            bad("group", "longer than 64 characters")
        card: str | None = None
        if value.get("card"):
            try:
                card = normalise_credential(value["card"])
            except CardFormatError as exc:
                bad("card", str(exc))
            else:
                if ("card", card) in first_line:
                    bad("card", f"card {card} is already on line {first_line['card', card]}")
                else:
                    first_line["card", card] = line
        rows.append(_Row(line, kind, external_id, name, group, card))
    return rows


def _chunks(values: Sequence[T], size: int = 500) -> Iterator[list[T]]:
    """IN lists of a bounded size (SQLite limits the parameters of one statement)."""
    for start in range(0, len(values), size):
        yield list(values[start:start + size])


def hosts(session: Session) -> list[Person]:
    """Staff who may receive visitors, by name."""
    return list(session.scalars(select(Person).where(Person.kind == "staff", Person.active)
                                .order_by(Person.name, Person.id)))


