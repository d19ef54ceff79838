"""The interface's Russian: every text a template asks for has a translation with the same
fields, every value the pages name from the data has a Russian term, and fields are filled
in after the text is chosen."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import get_args

from patron.analytics.lifecycle import STAGES
from patron.campaigns.schemas import KpiMetric
from patron.models import (
    AccountStatus,
    CampaignKind,
    CampaignStatus,
    Channel,
    ConsentStatus,
    ContentType,
    EntryKind,
    EntryStatus,
    IdentityKind,
    JobStatus,
    MessageStatus,
    OrderKind,
    Purpose,
    RecipientGroup,
)
from patron.web import i18n
from patron.web.service import UI_ROLES
from patron.web.views import HERE, templates

# t("...") with a double-quoted literal: the one way the templates call the translation
CALL = re.compile(r'\bt\(\s*"([^"]*)"')


def _fields(text: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", text))


def test_every_text_the_templates_ask_for_has_a_russian_entry_with_the_same_fields() -> None:
    sources = {p.name: p.read_text() for p in sorted((HERE / "templates").glob("*.html"))}
    asked = {key: name for name, source in sources.items() for key in CALL.findall(source)}
    assert [n for n, s in sources.items() if re.search(r"\bt\(\s*'", s)] == []
    assert len(sources) == 18
    assert len(asked) > 300  # the scan finds the calls (a broken pattern would find none)
    assert [(k, n) for k, n in asked.items() if k not in i18n.RUSSIAN] == []
    assert [k for k, ru in i18n.RUSSIAN.items() if _fields(k) != _fields(ru)] == []


def test_every_value_the_pages_name_from_the_data_has_a_russian_term() -> None:
    enums: list[type[StrEnum]] = [
        AccountStatus, CampaignKind, CampaignStatus, Channel, ConsentStatus, ContentType,
        EntryKind, EntryStatus, IdentityKind, JobStatus, MessageStatus, OrderKind, Purpose,
        RecipientGroup,
    ]  # fmt: skip
    values = {m.value for e in enums for m in e} | {r.value for r in UI_ROLES}
    values |= set(get_args(KpiMetric)) | set(STAGES) | {"stalled", "none", "spend"}
    assert sorted(v for v in values if v not in i18n.TERMS) == []


def test_fields_are_filled_in_after_the_text_is_chosen() -> None:
    page = templates.env.from_string(
        '{{ t("Merge #{loser} into #{winner}?", loser=8, winner=5) }} '
        '{{ t("{done} of {total}") }} {{ "win_back"|term }} {{ none|money }}'  # none: Jinja's None
    )
    assert page.render(lang="ru") == "Объединить №8 с №5? {done} из {total} возврат ушедших н/д"
    assert page.render(lang="en") == "Merge #8 into #5? {done} of {total} win back n/a"
