"""The request's ``language``: one table, every provider maps from it.

The contract says ISO-639-1 (``en``). A client may also send a BCP-47 tag whose language is ISO-639-1
(``en-US``, ``pt-BR``, ``zh-Hant``); anything else is a 400 naming ``language``, before any provider is
called. Each provider module takes the form of the same ``Language`` its API wants (docs/providers.md has
the table):

    ``code``     en                    ISO-639-1
    ``alpha_3``  eng                   ISO-639-2/T (= ISO-639-3 for these languages)
    ``tag``      en, en-US             BCP-47
    ``name``     English               for a prompt

The table is pycountry's ISO 639 data (184 two-letter codes), read once at import (about 0.2 s).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import pycountry

from bifrost_stt.kernel.errors import ClientError


@dataclass(frozen=True, slots=True)
class Language:
    code: str  # ISO-639-1, lower case: "en"
    alpha_3: str  # ISO-639-2/T (= 639-3 for these): "eng"
    name: str  # English name: "English"
    tag: str  # the BCP-47 tag as the client sent it, normalised: "en", "en-US", "zh-Hant"


def _table() -> tuple[Mapping[str, tuple[str, str]], Mapping[str, str]]:
    by_code: dict[str, tuple[str, str]] = {}
    to_code: dict[str, str] = {}
    for entry in pycountry.languages:
        code = getattr(entry, "alpha_2", None)
        if not code:
            continue
        name = str(getattr(entry, "common_name", None) or entry.name).split(" (")[0]
        by_code[code] = (entry.alpha_3, name)
        for three in (entry.alpha_3, getattr(entry, "bibliographic", None)):
            if three:
                to_code[three] = code
    to_code["cmn"] = "zh"  # Mandarin: what some providers answer for Chinese
    return MappingProxyType(by_code), MappingProxyType(to_code)


ISO_639_1, FROM_ALPHA_3 = _table()
_TAG = re.compile(r"([A-Za-z]{2})((?:[-_][A-Za-z0-9]{1,8})*)")


def _subtag(part: str) -> str:
    if len(part) == 2 and part.isalpha():
        return part.upper()  # region: US
    if len(part) == 4 and part.isalpha():
        return part.title()  # script: Hant
    return part.lower()


def parse_language(value: str) -> Language:
    """``value`` (ISO-639-1, or BCP-47 with an ISO-639-1 language) as a Language; ClientError otherwise."""
    text = value.strip()
    match = _TAG.fullmatch(text)
    code = match.group(1).lower() if match else ""
    if code not in ISO_639_1:
        raise ClientError(
            f"unknown language {value!r}: send an ISO-639-1 code such as 'en', 'de' or 'pt' "
            "(a BCP-47 tag like 'en-US' is accepted too)",
            param="language", code="unsupported_language",
        )
    assert match is not None
    rest = [_subtag(p) for p in re.split(r"[-_]", match.group(2)) if p]
    alpha_3, name = ISO_639_1[code]
    return Language(code=code, alpha_3=alpha_3, name=name, tag="-".join([code, *rest]))


def language_of(value: str | None) -> Language | None:
    """The Language for a request's (already validated) ``language``; None when none was sent."""
    return parse_language(value) if value else None


def to_iso_639_1(code: object) -> str | None:
    """A provider's answer (ISO-639-1 or -3, "eng") as ISO-639-1; unknown codes unchanged; None for none."""
    if not isinstance(code, str) or not code:
        return None
    low = code.lower()
    return low if low in ISO_639_1 else FROM_ALPHA_3.get(low, code)
