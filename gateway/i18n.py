"""The languages of the console and the reports: gettext catalogues
(console/locale/<lang>/LC_MESSAGES/campusgw.po), English msgids.

The .po files are compiled in memory at start (Babel), so there is no build
step and no binary file in the repository.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LOCALE_DIR = Path(__file__).parent / "console" / "locale"  # the console is where the words are
DOMAIN = "campusgw"
LANGUAGES = {"zh_CN": "简体中文", "en": "English"}
DEFAULT_LANGUAGE = "zh_CN"


@cache
def translations(language: str) -> Translations:
    if language not in LANGUAGES:
        language = DEFAULT_LANGUAGE
    with (LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as po:
        catalog = read_po(po, locale=language, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


def gettext(language: str, message: str) -> str:
    return translations(language).gettext(message)


def catalogue_ids(language: str) -> set[str]:
    with (LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as po:
        catalog = read_po(po, locale=language, domain=DOMAIN)
    return {str(m.id) for m in catalog if m.id and m.string}
