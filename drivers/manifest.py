"""What a driver folder declares about itself: its extension points, read without loading the driver.

A device driver is one folder, `drivers/<folder>/`, whose `__init__.py` holds a MANIFEST:

- `schema`: its site-file model (`schema.py`, pydantic only, so check-config loads no protocol library);
- `driver`: "module:Class" of the Driver (`driver.py`), imported only when a site uses it;
- `simulator`: the module of its simulator (`simulators/`), which speaks the device's protocol;
- `events`: the event types it emits (rows of gateway.catalogue.EVENT_TABLE);
- `entities`: its Home Assistant entities beside the connectivity every device has;
- `doctor`: "module" with `add_arguments(parser)` and `run(args)`, for `campusgw doctor <name>`.

Beside them, `quality.yaml` says which of the quality rules it meets (tests/unit/test_driver_folders.py checks
each claim against what exists). drivers.registry finds the folders; nothing else lists the drivers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drivers.base import Driver
    from gateway.config import DeviceConfig

Entity = tuple[str, dict[str, Any]]  # (object id, the discovery payload's own fields)


@dataclass(frozen=True, kw_only=True)
class Manifest:
    name: str  # the `driver:` of a device in the site file
    kinds: tuple[str, ...]  # the device kinds it serves (the <kind> of its topics)
    schema: type[DeviceConfig]
    driver: str  # "module:Class"
    simulator: str | None  # module
    events: tuple[str, ...]
    entities: Callable[[DeviceConfig, str], list[Entity]] | None = None  # (device, its state topic) -> entities
    doctor: str | None = None  # module

    def driver_class(self) -> type[Driver]:
        module, _, attr = self.driver.partition(":")
        cls: type[Driver] = getattr(import_module(module), attr)
        return cls
