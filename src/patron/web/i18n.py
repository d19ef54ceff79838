"""The user's language: English or Russian texts, and money, numbers and dates written
the way their locale writes them (Babel, from the Unicode CLDR).

The language is the one picked in the page footer (kept in the session), else the best
match of the browser's Accept-Language, else English. Texts without a translation show in
English, so a missing one never breaks a page.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_decimal, format_percent
from jinja2 import pass_context
from jinja2.runtime import Context

LANGUAGES = ("en", "ru")

RUSSIAN: dict[str, str] = {
    "Dashboard": "Сводка",
    "Customers": "Клиенты",
    "Segments": "Сегменты",
    "Campaigns": "Кампании",
    "Loyalty": "Лояльность",
    "Jobs": "Задачи",
    "Log out": "Выйти",
    "Log in": "Войти",
    "Username": "Имя пользователя",
    "Password": "Пароль",
    "Skip to content": "К содержимому",
    "Active": "Активные",
    "At risk": "Под угрозой ухода",
    "Lapsed": "Ушедшие",
    "Revenue": "Выручка",
    "Guest revenue": "Выручка без карты",
    "RFM segments": "RFM-сегменты",
    "Spend groups": "Группы по тратам",
    "Lifecycle": "Жизненный цикл",
    "Running campaigns": "Идущие кампании",
    "None running.": "Нет идущих кампаний.",
    "Segment": "Сегмент",
    "Share of customers": "Доля клиентов",
    "Share of spend": "Доля трат",
    "Share of turnover": "Доля оборота",
    "Band": "Группа",
    "Spend from": "Траты от",
    "Spend to": "Траты до",
    "Stage": "Стадия",
    "Share": "Доля",
    "Campaign": "Кампания",
    "Status": "Статус",
    "Channel": "Канал",
    "Queued": "В очереди",
    "Sent": "Отправлено",
    "Failed": "Ошибки",
    "Analysis as of": "Анализ на",
    "No analysis yet: run": "Анализа ещё нет: запустите",
    "Language": "Язык",
    "Name, city, email, phone or card": "Имя, город, email, телефон или карта",
    "Search": "Найти",
    "found": "найдено",
    "Something is wrong": "Что-то не так",
    "Back to the dashboard": "Вернуться к сводке",
}
"""Russian texts of the interface's frame (navigation, login, dashboard, search)."""


def choose(saved: str | None, accept_language: str) -> str:
    """The language: the saved choice, else the browser's best match, else English."""
    if saved in LANGUAGES:
        return str(saved)
    wanted = [part.split(";")[0].strip().replace("-", "_") for part in accept_language.split(",")]
    try:
        found = Locale.negotiate([w for w in wanted if w], list(LANGUAGES))
    except (UnknownLocaleError, ValueError):
        found = None
    return found.language if found is not None else "en"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@pass_context
def text(context: Context, english: str) -> str:
    return RUSSIAN.get(english, english) if context.get("lang") == "ru" else english


@pass_context
def money(context: Context, value: Any) -> str:
    if _missing(value):
        return "n/a"
    amount = Decimal(str(value)).quantize(Decimal("0.01"))
    return str(format_decimal(amount, format="#,##0.00", locale=context.get("lang", "en")))


@pass_context
def number(context: Context, value: Any) -> str:
    if _missing(value):
        return "n/a"
    return str(format_decimal(value, locale=context.get("lang", "en")))


@pass_context
def percent(context: Context, value: Any) -> str:
    if _missing(value):
        return "n/a"
    return str(format_percent(float(value), format="#0.0%", locale=context.get("lang", "en")))


@pass_context
def day(context: Context, value: date | datetime | None) -> str:
    if value is None:
        return ""
    return str(format_date(value, "medium", locale=context.get("lang", "en")))


@pass_context
def moment(context: Context, value: datetime | None) -> str:
    if value is None:
        return ""
    return str(format_datetime(value, "medium", locale=context.get("lang", "en")))
