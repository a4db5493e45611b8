"""Every string the console shows is in both catalogues, so no page falls back to a half-translated mix."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

from gateway import i18n
from gateway.catalogue import ALARMS
from gateway.console.auth import ROLES
from gateway.console.pages import PAGES, public_report
from gateway.console.pages import incidents as incidents_page
from gateway.console.web import LAYER_WORDS
from gateway.records import guardians, public_reports, visits
from gateway.rules import access
from gateway.rules.alarms import OPEN_STATES, PRIORITY

CONSOLE = Path(i18n.__file__).parent / "console"
ROOT = CONSOLE.parent.parent


def used_messages() -> set[str]:
    found: set[str] = set()
    for template in (CONSOLE / "templates").glob("*.html"):
        text = template.read_text(encoding="utf-8")
        found |= set(re.findall(r'_\(\s*"([^"]+)"\s*\)', text)) | set(re.findall(r"_\(\s*'([^']+)'\s*\)", text))
    for module in CONSOLE.rglob("*.py"):
        found |= set(re.findall(r'tr\(\s*request,\s*"([^"]+)"', module.read_text(encoding="utf-8")))
    for module in (ROOT / "gateway" / "rules" / "alarms.py", ROOT / "gateway" / "records" / "store.py",
                   ROOT / "gateway" / "rules" / "incidents.py", ROOT / "gateway" / "records" / "ledger.py",
                   CONSOLE / "pages" / "incidents.py"):
        # with strings continued over lines joined (a refusal is shown whole, so it is translated whole)
        messages = re.findall(r'RefusedAction\(\s*"((?:[^"]|"\s+")+)"', module.read_text(encoding="utf-8"))
        found |= {re.sub(r'"\s+"', "", m) for m in messages}
    # VisitError messages (the visitor desk shows them translated), with strings continued over lines joined
    for module in ("people", "visits", "watchlist"):
        text = (ROOT / "gateway" / "records" / f"{module}.py").read_text(encoding="utf-8")
        found |= {re.sub(r'"\s+"', "", m) for m in re.findall(r'VisitError\(\s*"((?:[^"]|"\s+")+)"', text)}
    found |= access_notes() | history_notes()
    from drivers.registry import manifests
    found |= {f"kind_{kind}" for m in manifests().values() for kind in m.kinds}  # the Devices page
    plans_text = (ROOT / "gateway" / "records" / "plans.py").read_text(encoding="utf-8")
    found |= {re.sub(r'"\s+"', "", m) for m in re.findall(r'PlanError\(\s*"((?:[^"]|"\s+")+)"', plans_text)}
    found |= set(visits.ID_TYPES) | set(visits.VISIT_STATES) | set(access.REASONS)
    found |= {"student", "staff", "visitor", "entry", "exit"}
    auth_text = (CONSOLE / "auth.py").read_text(encoding="utf-8")
    # AuthError messages the console shows (those with other {fields} are the CLI's, in English)
    messages = re.findall(r'AuthError\(\s*"((?:[^"]|"\s+")+)"', auth_text)
    found |= {re.sub(r'"\s+"', "", m) for m in messages if "{" not in m or "minutes" in m}
    found |= incidents_page.MSGIDS  # the ledger's codes, shown as "category_" ~ code and the like
    found |= {f"relation_{r}" for r in guardians.RELATIONS}  # the pick-up page's guardians
    found |= set(public_report.GUARD_MESSAGES) | {f"public_{k}" for k in public_reports.KINDS}
    found |= {f"public_state_{k}" for k in public_reports.STATES}
    found |= set(re.findall(r'ReportError\(\s*"([^"]+)"', (ROOT / "gateway" / "records" / "public_reports.py")
                            .read_text(encoding="utf-8")))
    found |= {re.sub(r'"\s+"', "", m) for m in re.findall(r'PickupError\(\s*"((?:[^"]|"\s+")+)"', (
        ROOT / "gateway" / "records" / "guardians.py").read_text(encoding="utf-8"))}
    found |= {title for _, title, _ in PAGES} | set(ROLES) | set(OPEN_STATES) | {"closed"} | set(PRIORITY)
    found |= set(ALARMS)  # the alarm board's labels (gateway.console.pages.alarms)
    found |= set(LAYER_WORDS.values())  # the alarm layer on every page (gateway.console.web)
    found |= {step for spec in ALARMS.values() for step in spec.procedure}  # the steps on an alarm's page
    return found


def access_notes() -> set[str]:
    """The notes of gateway.rules.access's decisions (shown in the access log in the guard's language): note=...,
    deny()'s third argument and grant()'s second."""
    tree = ast.parse((ROOT / "gateway" / "rules" / "access.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", "")
            found |= {k.value.value for k in node.keywords if k.arg == "note" and isinstance(k.value, ast.Constant)}
            index = {"deny": 2, "grant": 1}.get(name)
            if index is not None and len(node.args) > index and isinstance(node.args[index], ast.Constant):
                found.add(node.args[index].value)
    return {f for f in found if f}


def history_notes() -> set[str]:
    """The system's notes in an alarm's history with values (store.note(..., params=...)), shown in the guard's
    language: the text argument, a `said = (text, values)` pair's text, a `text = {...}[kind]` table's texts."""
    def strings(node: ast.AST | None) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.IfExp):
            return strings(node.body) | strings(node.orelse)
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Dict):
            return set().union(*(strings(v) for v in node.value.values))
        return set()

    found: set[str] = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if "store.note(" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "note" \
                    and any(k.arg == "params" for k in node.keywords) and len(node.args) > 3:
                found |= strings(node.args[3])
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
                if name == "said" and isinstance(node.value, ast.Tuple):
                    found |= strings(node.value.elts[0])
                elif name == "text" and isinstance(node.value, ast.Subscript):
                    found |= strings(node.value)
    return found


@pytest.mark.parametrize("language", sorted(i18n.LANGUAGES))
def test_every_console_string_is_in_the_catalogue(language: str) -> None:
    missing = used_messages() - i18n.catalogue_ids(language)
    assert not missing, f"add these to gateway/console/locale/{language}/LC_MESSAGES/campusgw.po: {sorted(missing)}"


def test_chinese_is_really_translated() -> None:
    zh = i18n.translations("zh_CN")
    for message in ("Alarms", "Acknowledge", "panic", "active_unack", "wrong user name or password"):
        assert re.search(r"[\u4e00-\u9fff]", zh.gettext(message)), f"{message!r} has no Chinese translation"


def test_codes_read_as_words_in_english() -> None:
    en = i18n.translations("en")
    assert en.gettext("active_unack") == "Active, not acknowledged"
    assert en.gettext("panic") == "One-key alarm"
    assert i18n.gettext("fr", "Alarms") == "报警", "an unknown language falls back to the default"


def po_entries(language: str) -> list[tuple[str | None, str]]:
    """The (msgctxt, msgid) of every entry of a catalogue, read from the file itself: Babel keeps one entry per
    msgid silently, so a duplicate (one word with two meanings) is only seen here."""
    path = i18n.LOCALE_DIR / language / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"
    entries: list[tuple[str | None, str]] = []
    context: str | None = None
    current: list[str] | None = None  # the msgid being read (it may go on over several lines)
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.startswith('"') and current is not None:
            current.append(ast.literal_eval(line))
            continue
        if current is not None:
            entries.append((context, "".join(current)))
            current, context = None, None
        if line.startswith("msgctxt "):
            context = ast.literal_eval(line[len("msgctxt "):])
        elif line.startswith("msgid "):
            current = [ast.literal_eval(line[len("msgid "):])]
    return [e for e in entries if e[1]]


@pytest.mark.parametrize("language", sorted(i18n.LANGUAGES))
def test_no_msgid_is_in_a_catalogue_twice(language: str) -> None:
    entries = po_entries(language)
    assert len(entries) > 500 and (None, "Raised (bollard)") in entries
    twice = sorted(msgid for (_, msgid), n in Counter(entries).items() if n > 1)
    assert not twice, f"give each meaning its own msgid in {language}'s campusgw.po: {twice}"


def test_a_raised_alarm_and_a_raised_bollard_are_different_words() -> None:
    assert i18n.gettext("zh_CN", "Raised") == "报警时间"  # the alarm board's column: when it was raised
    assert i18n.gettext("zh_CN", "Raised (bollard)") == "已升起"  # the bollard's state: up
    assert i18n.gettext("en", "Raised (bollard)") == "Raised"
    assert '_("Raised (bollard)")' in (CONSOLE / "templates" / "bollards.html").read_text(encoding="utf-8")
