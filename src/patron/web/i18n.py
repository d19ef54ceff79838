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
    "Error": "Ошибка",
    "Main": "Основное меню",
    "Audit log": "Журнал аудита",
    "Ends every session of yours, in every browser": "Завершает все ваши сеансы во всех браузерах",
    "Customers and revenue": "Клиенты и выручка",
    "Share of customers against share of turnover per spend band": (
        "Доля клиентов и доля оборота по группам трат"
    ),
    # audit log
    "When": "Когда",
    "Who": "Кто",
    "What": "Что",
    "On": "Объект",
    "Details": "Подробности",
    # customers and the customer 360
    "Id": "ID",
    "Name": "Имя",
    "City": "Город",
    "(no name)": "(без имени)",
    "Customer": "Клиент",
    "Merged into": "Объединён с профилем",
    "Identities": "Идентификаторы",
    "verified": "подтверждён",
    "none": "нет",
    "born": "дата рождения",
    "Scores": "Оценки",
    "Churn risk": "Риск оттока",
    "Next best offer": "Следующее лучшее предложение",
    "No scores yet.": "Оценок пока нет.",
    "Card": "Карта",
    "tier": "уровень",
    "{available} points ({pending} pending)": "{available} баллов ({pending} ожидают начисления)",
    "Latest ledger entries": "Последние операции по счёту",
    "Kind": "Вид",
    "Points": "Баллы",
    "Reason": "Причина",
    "Not a member.": "Не участник программы лояльности.",
    "Merges": "Объединения",
    "Merged": "Объединено",
    "Profile merged in": "Присоединённый профиль",
    "By": "Кто",
    "Undo": "Отмена",
    "undone": "отменено",
    "Unmerge…": "Разъединить…",
    "Merge customer #": "Объединить с клиентом №",
    "because": "причина",
    "Merge…": "Объединить…",
    "Consents and their history": "Согласия и их история",
    "Decided": "Дата решения",
    "Purpose": "Цель",
    "Source": "Источник",
    "Messages": "Сообщения",
    "Subject": "Тема",
    "Opened": "Открыто",
    "yes": "да",
    "Orders": "Заказы",
    "Placed": "Дата заказа",
    "Store": "Магазин",
    "Total": "Сумма",
    "Events": "События",
    "Type": "Тип",
    # merge and unmerge
    "Confirm the merge": "Подтвердите объединение",
    "Merge #{loser} into #{winner}?": "Объединить №{loser} с №{winner}?",
    "Every identity, consent decision, order and event of {loser} moves to {winner}; empty "
    "fields of the kept profile take the other's values. The merge log keeps exactly what "
    "moved, so it can be undone.": (
        "Все идентификаторы, решения о согласиях, заказы и события профиля {loser} переходят "
        "к профилю {winner}; пустые поля сохраняемого профиля заполняются значениями второго. "
        "Журнал объединений хранит всё, что было перенесено, поэтому объединение можно отменить."
    ),
    "Kept": "Сохраняется",
    "Merged in": "Присоединяется",
    "Cancel": "Отменить",
    "Confirm the unmerge": "Подтвердите разъединение",
    "Undo merge {merge}?": "Отменить объединение {merge}?",
    "#{loser} {name} was merged into #{winner} on {when} by {actor} ({reason}). Undoing it "
    "gives back the identities, consents, orders and events that moved, and empties the "
    "fields it filled; what the kept profile got since stays with it.": (
        "Профиль №{loser} {name} был объединён с №{winner} {when}, выполнил {actor} "
        "({reason}). Отмена вернёт перенесённые идентификаторы, согласия, заказы и события и "
        "очистит заполненные при объединении поля; всё, что сохранённый профиль получил "
        "после этого, останется у него."
    ),
    # segments
    "New segment": "Новый сегмент",
    "Description": "Описание",
    "Last build": "Последний расчёт",
    "Members then": "Участников тогда",
    "never": "никогда",
    "Conditions": "Условия",
    "Customers selected": "Отобрано клиентов",
    "The rule as data": "Правило в виде данных",
    "Rule (JSON)": "Правило (JSON)",
    "Save segment": "Сохранить сегмент",
    "Customers now": "Клиентов сейчас",
    "Rule": "Правило",
    "Export CSV": "Выгрузить в CSV",
    "Record membership now": "Зафиксировать состав сейчас",
    "Copy as": "Копировать как",
    "{name} (copy)": "{name} (копия)",
    "Duplicate": "Дублировать",
    "Spend-band migration": "Переходы между группами трат",
    "Members on {before} by spend band then (rows) and on {after} (columns)": (
        "Участники по группам трат на {before} (строки) и на {after} (столбцы)"
    ),
    "band then": "группа тогда",
    "now": "сейчас",
    "Needs two analysis runs and a build of this segment on or before the first.": (
        "Нужны два запуска анализа и расчёт этого сегмента не позже первого из них."
    ),
    "Membership over time": "Состав во времени",
    "Members at each build": "Участники при каждом расчёте",
    "Built": "Рассчитан",
    "Members": "Участники",
    "Entered": "Вошли",
    "Left": "Вышли",
    "No build yet.": "Расчётов ещё не было.",
    # the segment builder (passed to builder.js)
    "contains": "содержит",
    "Orders: measure": "Заказы: показатель",
    "Score": "Оценка",
    "Profile field": "Поле профиля",
    "is": "оператор",
    "status": "статус",
    "value": "значение",
    "in the last days": "за последние дни",
    "granted": "дано",
    "withdrawn": "отозвано",
    "never asked": "не запрашивалось",
    "Consent on": "Согласие на канал",
    "Had an event of type": "Было событие типа",
    "Bought in categories": "Покупал в категориях",
    "All of these (AND)": "Все условия (И)",
    "Any of these (OR)": "Любое из условий (ИЛИ)",
    "Match": "Совпадение",
    "Remove": "Удалить",
    "Add a condition…": "Добавить условие…",
    "Profile": "Профиль",
    "Purchases": "Покупки",
    "Orders measure": "Показатель заказов",
    "Analytics": "Аналитика",
    "Contact": "Связь",
    "Consent": "Согласие",
    "Behaviour": "Поведение",
    "Event": "Событие",
    "Logic": "Логика",
    "Nested group (AND/OR)": "Вложенная группа (И/ИЛИ)",
    "Condition": "Условие",
    "add a condition": "добавьте условие",
    # campaigns and the planner
    "Plan a campaign": "Запланировать кампанию",
    "Launched": "Запущена",
    "Steps": "Шаги",
    "Goal": "Цель",
    "Offer": "Предложение",
    "Message": "Сообщение",
    "Schedule": "Расписание",
    "Budget": "Бюджет",
    "1. Goal: what is the campaign for?": "1. Цель: зачем эта кампания?",
    "Content": "Содержание",
    "2. Segment: whom is it for?": "2. Сегмент: для кого она?",
    "Control group, % held out": "Контрольная группа, % исключённых из рассылки",
    "Test wave, % of the treated first (empty for none)": (
        "Тестовая волна, % целевой группы вперёд (пусто — без неё)"
    ),
    "3. Offer: what do they get?": "3. Предложение: что получат клиенты?",
    "Discount, %": "Скидка, %",
    "Coupon code prefix": "Префикс кода купона",
    "Gift": "Подарок",
    "Cost per redemption": "Стоимость одного погашения",
    "4. Message: what do we say?": "4. Сообщение: что мы скажем?",
    "HTML body": "Текст в HTML",
    "Text body": "Текстовая версия",
    "Preview for customer id": "Предпросмотр для клиента с ID",
    "Preview": "Предпросмотр",
    "5. Channel: how does it reach them?": "5. Канал: как сообщение дойдёт до клиентов?",
    "Cost per message": "Стоимость одного сообщения",
    "6. Schedule: when?": "6. Расписание: когда?",
    "Start (empty: at launch)": "Начало (пусто — при запуске)",
    "e.g. {example}": "например, {example}",
    "Time zone": "Часовой пояс",
    "7. Budget: how much may it cost?": "7. Бюджет: сколько можно потратить?",
    "Currency (empty: the default)": "Валюта (пусто — по умолчанию)",
    "8. KPI: how is it judged?": "8. KPI: как оценить результат?",
    "Expected value": "Ожидаемое значение",
    "Back": "Назад",
    "Next": "Далее",
    "Save the plan": "Сохранить план",
    "Launch": "Запустить",
    "Pause": "Приостановить",
    "Resume": "Возобновить",
    "Messages final": "Сообщений обработано",
    "{done} of {total}": "{done} из {total}",
    "Audience": "Аудитория",
    "Selected {selected}: treatment {treatment}, control {control}.": (
        "Отобрано {selected}: целевая группа {treatment}, контрольная группа {control}."
    ),
    "Report: treatment against control": "Отчёт: целевая группа против контрольной",
    "Window {start} to {end}": "Окно с {start} по {end}",
    "still open": "ещё открыто",
    "Group": "Группа",
    "Delivered": "Доставлено",
    "Clicked": "Переходы",
    "Converted": "Конверсии",
    "Conversion": "Конверсия",
    "Incremental conversion, {group}": "Инкрементальная конверсия, {group}",
    "estimate {estimate}, 95% interval {low} to {high}": (
        "оценка {estimate}, 95% интервал от {low} до {high}"
    ),
    "{estimate} (95% interval {low} to {high}); incremental revenue {revenue}": (
        "{estimate} (95% интервал от {low} до {high}); инкрементальная выручка {revenue}"
    ),
    "Plan against actual": "План и факт",
    "Spent": "Потрачено",
    "KPI {metric} expected": "KPI «{metric}», план",
    "Actual": "Факт",
    "n/a": "н/д",
    "met": "выполнен",
    "not met": "не выполнен",
    "Incremental profit": "Инкрементальная прибыль",
    "Journey": "Сценарий",
    "Entries": "Вхождения",
    "none yet": "пока нет",
    "Step": "Шаг",
    "Waiting here now": "Ожидают на шаге",
    "Outcomes": "Исходы",
    "Trail": "История изменений",
    # loyalty
    "Look up a card": "Найти карту",
    "Liability": "Обязательства",
    "Points outstanding": "Баллов на счетах",
    "Expected breakage": "Ожидаемое сгорание",
    "Tiers": "Уровни",
    "Tier": "Уровень",
    "Qualifying threshold": "Порог квалификации",
    "Earn multiplier": "Множитель начисления",
    "Discount": "Скидка",
    "Qualification: {measure} over the last {window} days (never the current balance); a "
    "downgrade waits {grace} days of grace.": (
        "Квалификация: {measure} за последние {window} дн. (не текущий баланс); понижение "
        "уровня — после льготного периода {grace} дн."
    ),
    "Coupon pools": "Пулы купонов",
    "Pool": "Пул",
    "Codes": "Коды",
    "Redeemed": "Погашено",
    "Discount given": "Предоставлено скидок",
    "No pools.": "Пулов нет.",
    "New coupon pool": "Новый пул купонов",
    "Or an amount off": "Или скидка суммой",
    "Bonus points": "Бонусные баллы",
    "Minimum basket": "Минимальная сумма чека",
    "Uses per code (empty: any)": "Использований на код (пусто — без ограничения)",
    "Uses per customer": "Использований на клиента",
    "Valid from": "Действует с",
    "Valid until (empty: no end)": "Действует до (пусто — бессрочно)",
    "Create the pool": "Создать пул",
    "Mini-programs": "Мини-программы",
    "Program": "Программа",
    "Reward": "Награда",
    "Period": "Период",
    "{points} points": "{points} баллов",
    "{start} to {end}": "с {start} по {end}",
    "None.": "Нет.",
    "New mini-program": "Новая мини-программа",
    "Goal on": "Цель по показателю",
    "Reward, points": "Награда, баллов",
    "Starts": "Начало",
    "Ends": "Окончание",
    "Take the segment's members now": "Сразу включить участников сегмента",
    "Create the mini-program": "Создать мини-программу",
    "The program's rules as data": "Правила программы в виде данных",
    "Rules (YAML); saving makes the next version, earlier ones stay": (
        "Правила (YAML); при сохранении создаётся следующая версия, прежние сохраняются"
    ),
    "Note": "Примечание",
    "Save as the next version": "Сохранить как следующую версию",
    "Loyalty account": "Счёт участника",
    "Card number": "Номер карты",
    "Find": "Найти",
    "customer #{id}": "клиент №{id}",
    "since {day}": "с {day}",
    "Available": "Доступно баллов",
    "Pending": "Ожидают начисления",
    "Expiring soon": "Скоро сгорят",
    "Qualifying spend": "Квалификационные траты",
    "Manual adjustment": "Ручная корректировка",
    "Points (negative takes points away)": "Баллы (отрицательное число списывает)",
    "Reason (mandatory)": "Причина (обязательно)",
    "Adjust": "Скорректировать",
    "Ledger": "Операции по счёту",
    "Expires": "Сгорают",
    "Tier history": "История уровней",
    "From": "С уровня",
    "To": "На уровень",
    "Why": "Причина",
    # jobs
    "Analysis": "Анализ",
    "Scores every customer as of now: RFM, spend groups, lifecycle, CLV, churn risk, next "
    "best offers.": (
        "Оценивает каждого клиента на текущий момент: RFM, группы по тратам, жизненный цикл, "
        "CLV, риск оттока, следующие лучшие предложения."
    ),
    "Run the analysis": "Запустить анализ",
    "Import a file": "Загрузить файл",
    "What the file holds": "Что в файле",
    "File (CSV, TSV, Excel, JSON lines)": "Файл (CSV, TSV, Excel, JSON Lines)",
    "Preset mapping (empty: columns by their names)": (
        "Готовое сопоставление (пусто — столбцы по их названиям)"
    ),
    "Import": "Загрузить",
    "Recent jobs": "Последние задачи",
    "Jobs of every server process; a running job that has not reported for a minute is "
    "shown as stalled (its process stopped).": (
        "Задачи всех процессов сервера; выполняющаяся задача, от которой больше минуты нет "
        "вестей, показана как зависшая (её процесс остановился)."
    ),
    "Started": "Начало",
    "Job": "Задача",
    "Progress": "Ход выполнения",
    "Outcome": "Итог",
    "progress of {job}": "ход выполнения: {job}",
    "None yet.": "Пока нет.",
}
"""Russian texts of every page, by their English text. A text with ``{name}`` fields is
filled in after it is chosen, so the fields keep their place in either language."""


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


def _unknown(context: Context) -> str:
    return RUSSIAN["n/a"] if context.get("lang") == "ru" else "n/a"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


TERMS: dict[str, str] = {
    # roles
    "admin": "администратор",
    "marketer": "маркетолог",
    "analyst": "аналитик",
    # campaign statuses, kinds and content
    "draft": "черновик",
    "scheduled": "запланирована",
    "running": "выполняется",
    "paused": "приостановлена",
    "completed": "завершена",
    "cancelled": "отменена",
    "acquisition": "привлечение",
    "bring_a_friend": "приведи друга",
    "up_sell": "допродажа (up-sell)",
    "cross_sell": "кросс-продажа",
    "retention": "удержание",
    "win_back": "возврат ушедших",
    "bonus": "бонусная",
    "informational": "информационная",
    "emotional": "эмоциональная",
    # offers and KPIs
    "none": "без предложения",
    "discount": "скидка",
    "points": "баллы",
    "coupon": "купон",
    "gift": "подарок",
    "conversion_rate": "конверсия",
    "incremental_conversion": "инкрементальная конверсия",
    "revenue_per_customer": "выручка на клиента",
    "incremental_revenue": "инкрементальная выручка",
    "roi": "ROI",
    # channels and identities
    "email": "email",
    "sms": "SMS",
    "phone": "телефон",
    "telegram": "Telegram",
    "whatsapp": "WhatsApp",
    "push": "push-уведомление",
    "card": "карта",
    "external": "внешний ID",
    # consents
    "granted": "дано",
    "withdrawn": "отозвано",
    "pending": "ожидает подтверждения",
    "marketing": "маркетинг",
    "transactional": "транзакционные",
    # messages
    "queued": "в очереди",
    "held": "задержано",
    "sending": "отправляется",
    "sent": "отправлено",
    "failed": "ошибка",
    "skipped": "пропущено",
    # orders, the ledger and accounts
    "purchase": "покупка",
    "return": "возврат",
    "earn": "начисление баллов",
    "burn": "списание баллов",
    "expire": "сгорание баллов",
    "adjust": "корректировка",
    "reverse": "сторно",
    "active": "активный",
    "blocked": "заблокированный",
    "spend": "траты",
    "purchases": "покупки",
    "points_earned": "начисленные баллы",
    # report groups and journey entries
    "treatment": "целевая группа",
    "control": "контрольная группа",
    "excluded": "исключены",
    "converted": "конверсия",
    "exited": "вышли",
    # lifecycle stages
    "prospect": "потенциальный",
    "new": "новый",
    "won_back": "вернувшийся",
    "at_risk": "под угрозой ухода",
    "lapsed": "ушедший",
    # jobs
    "finished": "завершена",
    "stalled": "зависла",
    "customers": "клиенты",
    "orders": "заказы",
    "products": "товары",
    "events": "события",
}
"""Russian names of values the pages show from the data: statuses, kinds, channels."""


@pass_context
def text(context: Context, english: str, **fields: Any) -> str:
    """The text in the page's language, with its ``{name}`` fields filled in."""
    chosen = RUSSIAN.get(english, english) if context.get("lang") == "ru" else english
    return chosen.format(**fields) if fields else chosen


@pass_context
def term(context: Context, value: Any) -> str:
    """A value from the data (a status, a kind, a channel) as the page's language names it."""
    raw = str(value)
    if context.get("lang") == "ru" and raw in TERMS:
        return TERMS[raw]
    return raw.replace("_", " ")


@pass_context
def money(context: Context, value: Any) -> str:
    if _missing(value):
        return _unknown(context)
    amount = Decimal(str(value)).quantize(Decimal("0.01"))
    return str(format_decimal(amount, format="#,##0.00", locale=context.get("lang", "en")))


@pass_context
def number(context: Context, value: Any) -> str:
    if _missing(value):
        return _unknown(context)
    return str(format_decimal(value, locale=context.get("lang", "en")))


@pass_context
def percent(context: Context, value: Any) -> str:
    if _missing(value):
        return _unknown(context)
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
