"""Parents and guardians (R42, 家长信息) and collecting a child at the gate desk (接送): who may collect which
student, checked at dismissal, each pick-up recorded with the guard who let the child go.

Phone numbers are kept encrypted and shown masked (gateway.personal), as visitors' are. Guardians come from a
CSV (header: student, name, relation, phone, may_collect), checked whole first: a file with any error imports
nothing and names each line. A student's guardians are replaced by the file's when the file names the student.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gateway.personal import PHONE_ERROR, PersonalData, clean_phone, mask_phone
from gateway.records import store
from gateway.records.errors import FormError
from gateway.records.models import Guardian, Person, Pickup

RELATIONS = ("father", "mother", "grandparent", "relative", "other")
YES, NO = ("yes", "y", "true", "1", "是"), ("no", "n", "false", "0", "否", "")
MAX_ROWS = 20_000


class PickupError(FormError):
    """A pick-up the guard cannot record as asked."""


@dataclass
class GuardianImport:
    students: int = 0
    guardians: int = 0
    errors: list[str] = field(default_factory=list)


def import_guardians(session: Session, personal: PersonalData, text: str, actor: str,
                     now: datetime) -> GuardianImport:
    result = GuardianImport()
    reader = csv.DictReader(io.StringIO(text))
    wanted = {"student", "name", "relation", "phone", "may_collect"}
    if reader.fieldnames is None or not wanted <= {f.strip() for f in reader.fieldnames}:
        result.errors.append(f"the header must name {', '.join(sorted(wanted))}")
        return result
    rows: list[tuple[int, dict[str, str]]] = []
    for line, raw in enumerate(reader, start=2):
        if line > MAX_ROWS + 1:
            result.errors.append(f"more than {MAX_ROWS} lines: split the file")
            return result
        rows.append((line, {k.strip(): (v or "").strip() for k, v in raw.items() if k}))
    students = {p.external_id: p for p in session.scalars(select(Person).where(
        Person.kind == "student", Person.external_id.in_({r["student"] for _, r in rows})))}
    clean: list[tuple[Person, str, str, str | None, bool]] = []
    for line, row in rows:
        student = students.get(row["student"])
        if student is None:
            result.errors.append(f"line {line}, column 'student': no student numbered {row['student']!r}")
            continue
        if not row["name"] or len(row["name"]) > 100:
            result.errors.append(f"line {line}, column 'name': a name of 1 to 100 characters")
            continue
        if row["relation"] not in RELATIONS:
            result.errors.append(f"line {line}, column 'relation': one of {', '.join(RELATIONS)}")
            continue
        try:
            phone = clean_phone(row["phone"])
        except ValueError:
            result.errors.append(f"line {line}, column 'phone': {PHONE_ERROR}")
            continue
        answer = row["may_collect"].lower()
        if answer not in (*YES, *NO):
            result.errors.append(f"line {line}, column 'may_collect': yes or no")
            continue
        clean.append((student, " ".join(row["name"].split()), row["relation"], phone, answer in YES))
    if result.errors:
        return result
    named = {s.id for s, *_ in clean}
    session.execute(delete(Guardian).where(Guardian.student_id.in_(named)))
    for student, name, relation, phone, may_collect in clean:
        session.add(Guardian(student_id=student.id, name=name, relation=relation,
                             phone_enc=personal.encrypt(phone) if phone else None,
                             phone_masked=mask_phone(phone) if phone else None, may_collect=may_collect,
                             updated_at=now))
    result.students, result.guardians = len(named), len(clean)
    store.audit(session, actor, "guardians.import", "guardians", "ok",
                {"students": result.students, "guardians": result.guardians}, now)
    return result


@dataclass(frozen=True)
class Collector:
    name: str
    relation: str
    phone: str | None  # masked
    may_collect: bool


@dataclass(frozen=True)
class PickupCheck:
    student: str  # name and class
    student_no: str
    authorised: bool
    collectors: list[Collector]  # the student's guardians, who may collect first


def _student(session: Session, student_no: str) -> Person:
    person = session.scalar(select(Person).where(Person.kind == "student", Person.external_id == student_no.strip(),
                                                 Person.active.is_(True)))
    if person is None:
        raise PickupError("no student numbered {number}", "student", number=student_no.strip())
    return person


def check_pickup(session: Session, student_no: str, collector: str, actor: str, now: datetime,
                 client: str | None = None) -> PickupCheck:
    """Whether `collector` may take the student home; recorded either way (a refusal too: the class teacher is
    then called), with the student's guardians for the guard to see."""
    student = _student(session, student_no)
    collector = " ".join(collector.split())
    if not collector:
        raise PickupError("enter who collects the child", "collector")
    guardians = list(session.scalars(select(Guardian).where(Guardian.student_id == student.id)
                                     .order_by(Guardian.may_collect.desc(), Guardian.id)))
    match = next((g for g in guardians if g.may_collect and g.name == collector), None)
    session.add(Pickup(student_id=student.id, guardian_id=match.id if match else None, collector=collector[:100],
                       authorised=match is not None, at=now, by=actor))
    store.audit(session, actor, "pickup.check", f"person:{student.id}", "ok" if match else "refused",
                {"collector": collector[:100], "authorised": match is not None}, now, client)
    return PickupCheck(f"{student.name} ({student.group_name or '-'})", student.external_id or "", match is not None,
                       [Collector(g.name, g.relation, g.phone_masked, g.may_collect) for g in guardians])


def pickups_since(session: Session, since: datetime) -> list[tuple[Pickup, Person]]:
    rows = session.execute(select(Pickup, Person).join(Person, Person.id == Pickup.student_id).where(
        Pickup.at >= since).order_by(Pickup.id.desc()))
    return [(pickup, student) for pickup, student in rows]
