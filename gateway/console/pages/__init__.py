"""The console's pages. A capability adds its page as a module here and one line in PAGES."""

from __future__ import annotations

# (key, title msgid, module or None while the page does not exist yet); the order is the navigation's.
PAGES: list[tuple[str, str, str | None]] = [
    ("alarms", "Alarms", "gateway.console.pages.alarms"),
    ("plan", "Site plan", "gateway.console.pages.plan"),
    ("visitors", "Visitors", "gateway.console.pages.visitors"),
    ("access", "Access", "gateway.console.pages.access"),
    ("bollards", "Bollards", "gateway.console.pages.bollards"),
    ("cameras", "Cameras", "gateway.console.pages.cameras"),
    ("patrols", "Patrols", "gateway.console.pages.patrols"),
    ("duty", "Duty roster", "gateway.console.pages.duty"),
    ("notifications", "Notifications", "gateway.console.pages.notifications"),
    ("incidents", "Incidents", "gateway.console.pages.incidents"),
    ("devices", "Devices", "gateway.console.pages.devices"),
    ("reports", "Reports", "gateway.console.pages.reports"),
    ("notices", "District notices", "gateway.console.pages.notices"),
    ("audit", "Audit log", "gateway.console.pages.audit"),
]
