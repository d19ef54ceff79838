"""The demo's triggered campaigns, played hour by hour over a simulated fortnight after the
history ends:

- a **birthday greeting**: an email on the day (a date trigger on ``birth_date``);
- a **win-back journey** for customers who lapsed lately (a segment trigger: entering the
  segment at its build): an email; three days later, an SMS to those who did not open it;
  then the most valuable of them go on the operators' call list;
- the **abandoned cart**: two hours after a cart is left, a reminder; a day later, a
  coupon; a purchase in between ends the journey as converted.

What the customers do in that fortnight (who opens the email, who leaves a cart, who buys
and when, who once agreed to be called) comes from :class:`Behaviour`, a seeded
simulator, not from real people. Each draw is fixed by the customer's id and the seed, so
a test can work the expected counts out without running anything.

Messages go through local stand-ins, never to a provider: email to a local SMTP server
(saved as ``.eml`` files), SMS to a local server answering as Twilio's Messages API (saved
as lines of ``sms.jsonl``), calls to the operators' call list. The sends belong to the
simulated fortnight, so the worker is told that no hour is quiet: the wall clock's hour
says nothing of theirs.

Run again on the same store, the part finds its campaigns and reports them, playing
nothing twice.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
from aiosmtpd.controller import Controller
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from patron.analytics.repository import AnalyticsRepository
from patron.campaigns.groups import unit_hash
from patron.campaigns.repository import CampaignRepository
from patron.campaigns.schemas import CampaignIn, Schedule
from patron.campaigns.service import CampaignService
from patron.catalog.repository import ProductRepository
from patron.channels.calls import CallList
from patron.channels.email import SmtpSettings, SmtpTransport
from patron.channels.router import Router
from patron.channels.sms import TwilioSms
from patron.channels.twilio import TwilioSettings
from patron.cli.demo_campaign import EmlOutbox, free_port
from patron.customers.schemas import ConsentIn
from patron.customers.service import CustomerService
from patron.dispatch.service import DispatchService
from patron.dispatch.tasks import WorkerStats, run_worker
from patron.events.schemas import EventIn, OrderIn
from patron.events.service import EventService, OrderService
from patron.journeys.repository import JourneyRepository
from patron.journeys.service import JourneyService
from patron.journeys.tasks import run_pass
from patron.kit.db import unit_of_work
from patron.kit.settings import get_settings
from patron.models import (
    Campaign,
    Channel,
    ConsentStatus,
)
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService

ACTOR = "demo"
SOURCE = "demo-journeys"
STRETCH_DAYS = 14
"""The simulated stretch, from the local midnight after the history ends."""
CART_DAYS = 10
"""Carts are left in the first days of the stretch, so every cart journey ends in it."""
ZONE = "Europe/Moscow"

EVERYONE = "everyone"
EVERYONE_RULE: dict[str, Any] = {"kind": "profile", "field": "created_at", "op": "not_null"}
LAPSED = "lapsed in the last 60 days"
LAPSED_RULE: dict[str, Any] = {
    "all": [
        {"kind": "score", "field": "lifecycle_stage", "value": "lapsed"},
        # the long gone rarely come back; a win-back goes to those who left lately
        {"kind": "score", "field": "recency_days", "op": "le", "value": 60},
    ]
}
VALUABLE_CLV = 5000
"""The CLV (RUB, the analysis's) from which a lapsed customer is worth an operator's call."""
SHOPPING_STAGES = ("new", "active", "at_risk", "won_back")
"""The lifecycle stages of customers who still visit the shop, and so may leave a cart."""

BIRTHDAY = "Birthday greeting"
WIN_BACK = "Win back the lately lapsed"
CART = "Abandoned cart"

_SENDER = "Patron Demo Shop <news@demo-shop.example>"
_BIRTHDAY_EMAIL = {
    "subject": "Happy birthday, {{ customer.first_name }}!",
    "html": "<p>Happy birthday, {{ customer.first_name }}! A gift waits for you in store.</p>"
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
    "text": "Happy birthday, {{ customer.first_name }}! A gift waits for you in store.",
    "sender": _SENDER,
}
_WIN_BACK_EMAIL = {
    "subject": "{{ customer.first_name }}, we have missed you: {{ offer.discount_percent }}% off",
    "html": "<p>{{ customer.first_name }}, it has been a while. Here is "
    "{{ offer.discount_percent }}% off your next visit.</p>"
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
    "text": "{{ customer.first_name }}, it has been a while. Here is "
    "{{ offer.discount_percent }}% off your next visit.",
    "sender": _SENDER,
}
_WIN_BACK_SMS = {"text": "{{ customer.first_name }}, {{ offer.discount_percent }}% off your "
                 "next visit to Demo Shop, this week only. STOP to opt out"}  # fmt: skip
_WIN_BACK_CALL = {"text": "Call {{ customer.first_name }}: a valued customer who has not "
                  "been in lately. Ask how we can do better; offer "
                  "{{ offer.discount_percent }}% off the next visit."}  # fmt: skip
_CART_EMAIL = {
    "subject": "{{ customer.first_name }}, your cart is waiting",
    "html": "<p>{{ trigger.name }} is still in your cart.</p>"
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
    "text": "{{ trigger.name }} is still in your cart.",
    "sender": _SENDER,
}
_CART_COUPON = _CART_EMAIL | {
    "subject": "{{ customer.first_name }}: 10% off your cart with {{ coupon }}",
    "text": "{{ trigger.name }} is still in your cart: 10% off with the code {{ coupon }}.",
}

WIN_BACK_JOURNEY: dict[str, Any] = {
    "goal": "purchase",
    "steps": [
        {"id": "email", "type": "send", "channel": "email"},
        {"id": "wait", "type": "wait", "days": 3},
        {"id": "opened", "type": "branch", "when": {"opened": "email"}, "then": "done",
         "otherwise": "sms"},
        {"id": "sms", "type": "send", "channel": "sms", "message": _WIN_BACK_SMS},
        {"id": "valuable", "type": "branch",
         "when": {"score": "clv", "op": ">=", "value": VALUABLE_CLV}, "then": "call"},
        {"id": "call", "type": "send", "channel": "phone", "message": _WIN_BACK_CALL,
         "next": None},
        {"id": "done", "type": "exit"},
    ],
}  # fmt: skip
CART_JOURNEY: dict[str, Any] = {
    "goal": "purchase",
    "steps": [
        {"id": "hold", "type": "wait", "hours": 2},
        {"id": "remind", "type": "send", "message": _CART_EMAIL},
        {"id": "later", "type": "wait", "days": 1},
        {"id": "coupon", "type": "send", "message": _CART_COUPON,
         "offer": {"kind": "coupon", "coupon_prefix": "CART", "discount_percent": "10",
                   "valid_days": 7}},
    ],
}  # fmt: skip


@dataclass(frozen=True)
class Cart:
    """A cart the simulator leaves, and when (if ever) its customer buys."""

    customer_id: int
    at: datetime
    sku: str
    name: str
    price: Decimal
    bought_at: datetime | None


@dataclass(frozen=True)
class Behaviour:
    """The simulated customers of the fortnight: a simulator, not real people.

    Every draw is :func:`patron.campaigns.groups.unit_hash` of the customer's id with a
    salt of its own, so each customer's behaviour is fixed by the seed whatever else
    happens, and a test can work it out again.
    """

    seed: int = 5
    opens: float = 0.35
    """Share of the win-back emails opened, within two days of the send."""
    buys_after_open: float = 0.30
    """Share of those who opened it who then buy, 1 to 20 hours after opening."""
    allows_calls: float = 0.5
    """Share of the lapsed customers who once agreed to be called (a consent the
    generated base does not carry)."""
    carts: float = 0.03
    """Share of the shoppers who leave a cart in the first days of the stretch."""
    buys_soon: float = 0.20
    """Share of the carts bought 10 to 110 minutes after, before any reminder."""
    buys_later: float = 0.15
    """Share bought 3 to 22 hours after, between the reminder and the coupon."""

    def draw(self, ids: list[int], what: int) -> npt.NDArray[np.float64]:
        """A uniform number in [0, 1) per customer, for the thing numbered ``what``."""
        return unit_hash(np.array(ids, dtype=np.int64), salt=1000 * self.seed + what)

    def open_delays(self, ids: list[int]) -> dict[int, timedelta]:
        """Who opens the win-back email, and how long after it was sent."""
        opens, delay = self.draw(ids, 1), self.draw(ids, 2)
        pairs = zip(ids, opens.tolist(), delay.tolist(), strict=True)
        return {c: timedelta(seconds=int(48 * 3600 * d)) for c, u, d in pairs if u < self.opens}

    def win_backs(
        self, ids: list[int], *, products: list[tuple[str, str, Decimal]]
    ) -> dict[int, tuple[timedelta, str, Decimal]]:
        """Who, having opened the win-back email, buys: how long after opening, and the
        product (``(sku, name, price)`` from ``products``)."""
        buys, delay, product = (self.draw(ids, k).tolist() for k in (3, 4, 11))
        return {
            c: (timedelta(seconds=3600 + int(19 * 3600 * delay[i])),
                *_pick(products, product[i])[::2])
            for i, c in enumerate(ids) if buys[i] < self.buys_after_open
        }  # fmt: skip

    def callable(self, ids: list[int]) -> list[int]:
        """Who agreed to be called."""
        return [c for c, u in zip(ids, self.draw(ids, 5).tolist(), strict=True)
                if u < self.allows_calls]  # fmt: skip

    def left_carts(
        self, ids: list[int], *, start: datetime, products: list[tuple[str, str, Decimal]]
    ) -> list[Cart]:
        """The carts shoppers leave in the first :data:`CART_DAYS` days after ``start``,
        each with its product (``(sku, name, price)``) and its purchase, if any."""
        chosen = [c for c, u in zip(ids, self.draw(ids, 6).tolist(), strict=True)
                  if u < self.carts]  # fmt: skip
        moment, product, fate, delay = (self.draw(chosen, k).tolist() for k in (7, 8, 9, 10))
        carts: list[Cart] = []
        for i, customer in enumerate(chosen):
            at = start + timedelta(seconds=int(CART_DAYS * 86_400 * moment[i]))
            sku, name, price = _pick(products, product[i])
            bought: datetime | None = None
            if fate[i] < self.buys_soon:
                bought = at + timedelta(seconds=600 + int(100 * 60 * delay[i]))
            elif fate[i] < self.buys_soon + self.buys_later:
                bought = at + timedelta(seconds=3 * 3600 + int(19 * 3600 * delay[i]))
            carts.append(Cart(customer, at, sku, name, price, bought))
        return carts


BEHAVIOUR = Behaviour()


def _pick(products: list[tuple[str, str, Decimal]], u: float) -> tuple[str, str, Decimal]:
    return products[int(len(products) * u)]


@dataclass(frozen=True)
class JourneyReport:
    """One triggered campaign's figures, as :meth:`JourneyService.report` gives them."""

    campaign_id: int
    name: str
    status: str
    report: dict[str, Any]


@dataclass
class JourneysDemo:
    """What the journeys part did: the stretch, the simulated behaviour, the sends and
    each campaign's report."""

    start: datetime
    end: datetime
    played: bool
    """False when an earlier run played the stretch, and this one only reported it."""
    carts: list[Cart] = field(default_factory=list)
    opens: int = 0
    orders: int = 0
    revenue: Decimal = Decimal(0)
    """The simulated purchases, stored as orders."""
    worker: WorkerStats = field(default_factory=WorkerStats)
    eml_files: int = 0
    sms: int = 0
    reports: list[JourneyReport] = field(default_factory=list)
    seconds: float = 0.0


def stretch_start(as_of: datetime) -> datetime:
    """The local midnight after ``as_of``, where the simulated stretch begins."""
    day = as_of.astimezone(ZoneInfo(ZONE)).date() + timedelta(days=1)
    return datetime.combine(day, clock_time(), tzinfo=ZoneInfo(ZONE)).astimezone(UTC)


def run_journeys_demo(
    factory: sessionmaker[Session], *, console: Console, workspace: Path, as_of: datetime
) -> JourneysDemo:
    """Launch the three triggered campaigns, play the stretch hour by hour with the
    simulator, send through local stand-ins, and print each journey's report."""
    started = time.perf_counter()
    start = stretch_start(as_of)
    end = start + timedelta(days=STRETCH_DAYS)
    with unit_of_work(factory) as session:
        found = _campaigns(session)
    result = JourneysDemo(start=start, end=end, played=not found)
    if found:
        console.print(
            f"triggered campaigns: the stretch from {start:%Y-%m-%d} was played by an earlier "
            "run; their reports again:"
        )
    else:
        console.print(
            f"triggered campaigns: a birthday greeting, a win-back journey and the abandoned "
            f"cart, played hour by hour over {STRETCH_DAYS} simulated days from "
            f"{start.astimezone(ZoneInfo(ZONE)):%Y-%m-%d %H:%M} Moscow time; what customers "
            f"do comes from a seeded simulator, not real people ..."
        )
        _play(factory, result, workspace=workspace)
        sent = result.worker
        console.print(
            f"simulated: {len(result.carts):,} carts left ("
            f"{sum(c.bought_at is not None for c in result.carts):,} bought later), "
            f"{result.opens:,} win-back emails opened, {result.orders:,} purchases "
            f"({result.revenue:,} RUB)"
        )
        console.print(
            f"sent {sent.sent:,} messages ({result.eml_files:,} emails to a local SMTP server, "
            f"{result.sms:,} SMS to a local Twilio-compatible server, the rest to the call "
            f"list; {sent.skipped:,} skipped, {sent.failed:,} failed), saved under "
            f"{workspace / 'outbox'}"
        )
    with unit_of_work(factory) as session:
        service = JourneyService(session)
        for campaign in _campaigns(session):
            result.reports.append(JourneyReport(campaign.id, campaign.name,
                                                campaign.status.value,
                                                service.report(campaign)))  # fmt: skip
    for each in result.reports:
        _print(console, each)
    result.seconds = time.perf_counter() - started
    console.print(f"triggered campaigns done in {result.seconds:.1f} s")
    return result


def _campaigns(session: Session) -> list[Campaign]:
    return CampaignRepository(session).by_names([BIRTHDAY, WIN_BACK, CART])


def _play(factory: sessionmaker[Session], result: JourneysDemo, *, workspace: Path) -> None:
    start, end = result.start, result.end
    with unit_of_work(factory) as session:
        lapsed = _launch(session, start=start, end=end)
        shoppers, products = _shoppers(session, as_of=start), _products(session)
        # the consent to be called is the simulator's: the generated base has none
        customers = CustomerService(session)
        for customer in BEHAVIOUR.callable(lapsed):
            customers.record_consent(customer, ConsentIn(
                channel=Channel.PHONE, status=ConsentStatus.GRANTED,
                decided_at=start - timedelta(days=30)), source=SOURCE)  # fmt: skip
    result.carts = BEHAVIOUR.left_carts(shoppers, start=start, products=products)
    # what happens, in time order: (when, what, customer, detail)
    due: list[tuple[datetime, str, int, Any]] = []
    for cart in result.carts:
        due.append((cart.at, "cart", cart.customer_id, cart))
        if cart.bought_at is not None:
            due.append((cart.bought_at, "buy", cart.customer_id, cart))
    opened: set[int] = set()

    outbox = workspace / "outbox" / "journeys"
    outbox.mkdir(parents=True, exist_ok=True)
    mail = EmlOutbox(outbox)
    smtp_port = free_port()
    smtp = Controller(mail, hostname="127.0.0.1", port=smtp_port)
    twilio = _LocalTwilio(outbox / "sms.jsonl")
    smtp.start()
    twilio.start()
    try:
        moment = start
        while moment <= end:
            due.sort(key=lambda item: item[0])
            happened = [item for item in due if item[0] <= moment]
            del due[: len(happened)]
            if happened:
                with unit_of_work(factory) as session:
                    _happen(session, happened, result)
            run_pass(factory, now=moment)
            if (moment - start) % timedelta(days=1) == timedelta(0) or moment == end:
                # a day's messages go out, then the simulator reads the win-back emails
                _send(factory, result, smtp_port=smtp_port, twilio=twilio)
                with unit_of_work(factory) as session:
                    due += _opens(session, opened)
            moment += timedelta(hours=1)
        # the last messages are sent: the campaigns, past their end, complete
        run_pass(factory, now=end)
    finally:
        smtp.stop()
        twilio.stop()
    result.opens, result.eml_files, result.sms = len(opened), mail.count, twilio.count


def _launch(session: Session, *, start: datetime, end: datetime) -> list[int]:
    """Create and launch the three campaigns at ``start``, then build the lapsed segment
    so its members enter the win-back; returns them."""
    segments = SegmentService(session)
    for name, rule, text in [
        (EVERYONE, EVERYONE_RULE, "Every customer"),
        (LAPSED, LAPSED_RULE, "Lapsed, with a purchase in the last 60 days"),
    ]:
        if segments.repo.by_name(name) is None:
            segments.create(SegmentIn(name=name, description=text, rule=parse_rule(rule)),
                            actor=ACTOR)  # fmt: skip
    service = CampaignService(session)
    schedule = Schedule(start_at=start, end_at=end, timezone=ZONE)
    plans = [
        _plan(BIRTHDAY, "emotional", EVERYONE, _BIRTHDAY_EMAIL, schedule,
              goal="Greet each customer on their birthday", kind="retention",
              trigger={"on": {"kind": "date", "field": "birth_date"},
                       "reentry": {"mode": "once_per", "days": 300}}),
        _plan(WIN_BACK, "bonus", LAPSED, _WIN_BACK_EMAIL, schedule,
              goal="Bring back customers who lapsed lately", kind="win_back",
              trigger={"on": {"kind": "segment", "segment": LAPSED}},
              journey=WIN_BACK_JOURNEY,
              offer={"kind": "discount", "discount_percent": "15", "cost": "150.00"}),
        _plan(CART, "informational", EVERYONE, _CART_EMAIL, schedule,
              goal="Turn abandoned carts into purchases", kind="retention",
              trigger={"on": {"kind": "event", "event_type": "cart_abandoned"},
                       "reentry": {"mode": "once_per", "days": 7}},
              journey=CART_JOURNEY),
    ]  # fmt: skip
    for plan in plans:
        campaign = service.create(plan, actor=ACTOR)
        service.launch(campaign.id, actor=ACTOR, at=start)
    segment = segments.find(LAPSED)
    segments.build(segment, at=start)
    members = segments.repo.members(segment.id, on=None, limit=1_000_000, offset=0)
    return [customer for customer, _ in members]


def _plan(name: str, content: str, segment: str, message: dict[str, str], schedule: Schedule,
          **fields: Any) -> CampaignIn:  # fmt: skip
    return CampaignIn.model_validate({
        "name": name, "content_type": content, "segment": segment, "channel": "email",
        "message": message, "schedule": schedule.model_dump(mode="json"), "budget": "10000.00",
        "kpi": {"metric": "conversion_rate", "expected": "0.05"}, "control_share": 0.0,
        "attribution_days": 7, "cost_per_message": "0.50",
    } | fields)  # fmt: skip


def _shoppers(session: Session, *, as_of: datetime) -> list[int]:
    """Customers whose newest scores say they still shop."""
    analytics = AnalyticsRepository(session)
    run = analytics.newest_run_id(until=as_of)
    return [] if run is None else analytics.at_stages(run, SHOPPING_STAGES)


def _products(session: Session) -> list[tuple[str, str, Decimal]]:
    return [
        (str(p.sku), str(p.name), Decimal(str(p.price)))
        for p in ProductRepository(session).priced()
    ]


def _happen(session: Session, happened: list[tuple[datetime, str, int, Any]],
            result: JourneysDemo) -> None:  # fmt: skip
    """Store what the simulator's customers did: carts left, purchases, emails opened."""
    events, orders, dispatch = (
        EventService(session),
        OrderService(session),
        DispatchService(session),
    )
    for at, what, customer, detail in happened:
        if what == "cart":
            events.create(EventIn(
                customer_id=customer, type="cart_abandoned", occurred_at=at, source=SOURCE,
                external_id=f"cart-{customer}",
                properties={"sku": detail.sku, "name": detail.name, "value": str(detail.price)},
            ))  # fmt: skip
        elif what == "open":
            dispatch.opened(detail, now=at)
        else:
            sku, price = (detail.sku, detail.price) if isinstance(detail, Cart) else detail
            reason = "cart" if isinstance(detail, Cart) else "win-back"
            order = orders.create(OrderIn.model_validate({
                "customer_id": customer, "source": SOURCE, "external_id": f"{reason}-{customer}",
                "placed_at": at.isoformat(), "currency": "RUB",
                "lines": [{"sku": sku, "quantity": 1, "unit_price": str(price)}],
            }))  # fmt: skip
            result.orders += 1
            result.revenue += order.total


def _opens(session: Session, opened: set[int]) -> list[tuple[datetime, str, int, Any]]:
    """The simulator reads the win-back emails sent so far: who opens each, and when, and
    who then buys what."""
    win_back = CampaignRepository(session).by_name(WIN_BACK)
    rows = [] if win_back is None else JourneyRepository(session).sent_at_step(win_back.id, "email")
    new = [(m, c, at) for m, c, at in rows if c not in opened]
    delays = BEHAVIOUR.open_delays([c for _, c, _ in new])
    buys = BEHAVIOUR.win_backs(sorted(delays), products=_products(session))
    due: list[tuple[datetime, str, int, Any]] = []
    for message, customer, sent in new:
        if customer in delays:
            opened.add(customer)
            seen = sent + delays[customer]
            due.append((seen, "open", customer, message))
            if customer in buys:
                after, sku, price = buys[customer]
                due.append((seen + after, "buy", customer, (sku, price)))
    return due


def _send(factory: sessionmaker[Session], result: JourneysDemo, *, smtp_port: int,
          twilio: _LocalTwilio) -> None:  # fmt: skip
    """Run the worker until the outbox is empty, through the local stand-ins only."""
    # the sends belong to the simulated day: no wall-clock hour is quiet for them
    settings = get_settings().model_copy(update={"quiet_hours_channels": []})
    router = Router({
        Channel.EMAIL: SmtpTransport(SmtpSettings(host="127.0.0.1", port=smtp_port,
                                                  connections=2)),
        Channel.SMS: TwilioSms(twilio.settings, region=settings.default_region),
        Channel.PHONE: CallList(region=settings.default_region),
    })  # fmt: skip
    stats = run_worker(factory, router, settings=settings, until_idle=True)
    total = result.worker
    total.sent += stats.sent
    total.skipped += stats.skipped
    total.failed += stats.failed


class _LocalTwilio:
    """A local server answering as Twilio's Messages resource (``POST
    /2010-04-01/Accounts/{sid}/Messages.json`` with Basic auth and a form of ``To``,
    ``From`` and ``Body``; 201 with a ``sid``), saving each SMS as a line of JSON."""

    SID = "AC" + "d" * 32
    TOKEN = "demo-token"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        host, port = self._server.server_address[:2]
        self.settings = TwilioSettings(
            account_sid=self.SID, auth_token=SecretStr(self.TOKEN), sender="+15005550006",
            base_url=f"http://{host!s}:{port}",
        )  # fmt: skip

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _accept(self, path: str, auth: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        expected = base64.b64encode(f"{self.SID}:{self.TOKEN}".encode()).decode()
        if auth != f"Basic {expected}":
            return 401, {"code": 20003, "message": "Authenticate", "status": 401}
        if path != f"/2010-04-01/Accounts/{self.SID}/Messages.json":
            return 404, {"code": 20404, "message": "not found", "status": 404}
        with self._lock:
            self.count += 1
            sid = f"SM{self.count:032x}"
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps({"sid": sid, **form}, ensure_ascii=False) + "\n")
        return 201, {"sid": sid, "status": "queued", "to": form.get("To"),
                     "from": form.get("From"), "body": form.get("Body")}  # fmt: skip

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                status, body = owner._accept(self.path, self.headers.get("Authorization", ""),
                                             form)  # fmt: skip
                content = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler


def _print(console: Console, each: JourneyReport) -> None:
    report = each.report
    entries = ", ".join(f"{status} {n:,}" for status, n in sorted(report["entries"].items()))
    table = Table(
        title=f"Campaign {each.campaign_id}: {each.name} ({each.status})",
        caption=f"entries: {entries or 'none'}",
    )
    for column in ("step", "type", "outcomes", "now here"):
        table.add_column(column, justify="right" if column == "now here" else "left")
    for step in report["steps"]:
        outcomes = ", ".join(f"{name} {n:,}" for name, n in sorted(step["outcomes"].items()))
        table.add_row(step["id"], step["type"], outcomes,
                      f"{report['at_step'].get(step['id'], 0):,}")  # fmt: skip
    if report["goal"]:
        table.add_row("goal", "", ", ".join(f"{k} {n:,}" for k, n in report["goal"].items()), "")
    console.print(table)
