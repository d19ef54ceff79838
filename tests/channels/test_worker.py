"""An SMS campaign end to end: the channels file turns Twilio on, the worker routes the
messages to it (a local server answering as Twilio documents), then Twilio's signed
callbacks report a delivery and a customer's STOP reply, which withdraws her consent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from patron.api.app import create_app
from patron.campaigns.service import CampaignService
from patron.channels.calls import CallList
from patron.channels.config import load_channels
from patron.channels.twilio import twilio_signature
from patron.customers.schemas import ConsentIn
from patron.customers.service import CustomerService
from patron.dispatch.tasks import run_worker, transports
from patron.kit.errors import InvalidInput
from patron.kit.settings import Settings, get_settings
from patron.models import (
    Channel,
    ConsentStatus,
    Event,
    Message,
    MessageStatus,
    Role,
    Suppression,
)
from patron.segments.schemas import SegmentIn, parse_rule
from patron.segments.service import SegmentService
from tests.campaigns.test_plan import plan
from tests.channels.test_sms import SID, TOKEN, TwilioApi, sid_of
from tests.channels.test_telegram import SECRET as BOT_SECRET
from tests.channels.test_telegram import TOKEN as BOT_TOKEN
from tests.channels.test_telegram import bot_api
from tests.fixtures.api import Headers, api_client, auth_headers
from tests.fixtures.http_provider import Start
from tests.fixtures.segments import store_base

__all__ = ["api_client", "auth_headers"]

PUBLIC = "https://crm.example.com"


@pytest.fixture
def configured(provider: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Twilio for SMS in a channels file, quiet hours off (the test runs at any hour)."""
    server = provider(TwilioApi())
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        yaml.safe_dump(
            {"sms": {"provider": "twilio", "twilio": {
                "account_sid": SID, "auth_token": TOKEN, "sender": "+15005550006",
                "base_url": server.url}}}
        ),
        encoding="utf-8",
    )  # fmt: skip
    for name, value in {
        "PATRON_CHANNELS_FILE": str(channels), "PATRON_QUIET_HOURS_START": "0",
        "PATRON_QUIET_HOURS_END": "0", "PATRON_PUBLIC_URL": PUBLIC,
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _launch(factory: sessionmaker[Session]) -> None:
    with factory() as session:
        store_base(session)
        # Anna says yes to SMS too; Vera said yes already
        CustomerService(session).record_consent(
            1, ConsentIn(channel=Channel.SMS, status=ConsentStatus.GRANTED,
                         decided_at=datetime(2026, 1, 1, tzinfo=UTC)),
            source="form",
        )  # fmt: skip
        SegmentService(session).create(
            SegmentIn(name="sms", rule=parse_rule({"kind": "consent", "channel": "sms"})),
            actor="t",
        )
        service = CampaignService(session)
        campaign = service.create(
            plan(segment="sms", control_share=0.0, channel="sms",
                 message={"text": "{{ customer.first_name }}, -15% until Sunday"}),
            actor="m",
        )  # fmt: skip
        service.launch(campaign.id, actor="m")
        session.commit()


def _signed(path: str, form: dict[str, str], token: str = TOKEN) -> dict[str, str]:
    return {"X-Twilio-Signature": twilio_signature(f"{PUBLIC}/api/v1{path}", form,
                                                   auth_token=token)}  # fmt: skip


def test_an_sms_campaign_goes_through_twilio_and_hears_back(
    configured: None, engine: Engine
) -> None:
    factory = sessionmaker(engine, expire_on_commit=False)
    _launch(factory)
    settings = get_settings()
    stats = run_worker(factory, transports(settings), settings=settings, until_idle=True)
    assert (stats.sent, stats.failed, stats.skipped, stats.completed) == (2, 0, 0, [1])
    with factory() as session:
        sent = {m.customer_id: m for m in session.scalars(select(Message))}
    assert {c: (m.status, m.provider_ref) for c, m in sent.items()} == {
        1: (MessageStatus.SENT, sid_of("Anna, -15% until Sunday")),
        3: (MessageStatus.SENT, sid_of("Vera, -15% until Sunday")),
    }

    with TestClient(create_app(engine), base_url="http://testserver/api/v1") as api:
        path = "/webhooks/twilio/sms"
        delivered = {"MessageSid": sent[1].provider_ref or "", "MessageStatus": "delivered",
                     "AccountSid": SID, "To": "+79161234501", "From": "+15005550006"}  # fmt: skip
        answer = api.post(path, data=delivered, headers=_signed(path, delivered))
        assert answer.status_code == 200, answer.text
        assert answer.json()["delivered"] == 1

        forged = api.post(path, data=delivered, headers=_signed(path, delivered, token="x"))
        assert (forged.status_code, forged.json()) == (
            403, {"error": "webhooks/twilio/sms: the X-Twilio-Signature does not match"}
        )  # fmt: skip

        stop = {"MessageSid": "SM" + "9" * 32, "SmsStatus": "received", "From": "+79161234503",
                "To": "+15005550006", "Body": "СТОП", "AccountSid": SID}  # fmt: skip
        answer = api.post(path, data=stop, headers=_signed(path, stop))
        assert answer.json()["opt_out"] == 1

        unknown = {**stop, "From": "+79990000000", "Body": "who is this?"}
        answer = api.post(path, data=unknown, headers=_signed(path, unknown))
        assert (answer.json()["inbound"], answer.json()["unmatched"]) == (1, 1)

    with factory() as session:
        anna = session.get(Message, sent[1].id)
        assert anna is not None and anna.delivered_at is not None
        # Vera's reply: an event on her timeline, her SMS consent withdrawn, suppressed
        events = session.execute(
            select(Event.customer_id, Event.type, Event.properties).order_by(Event.id)
        ).all()
        replies = [e for e in events if e[1].startswith("message.")]
        assert [(e[0], e[1], e[2]["text"]) for e in replies] == [
            (3, "message.opt_out", "СТОП"), (None, "message.inbound", "who is this?")
        ]  # fmt: skip
        consents = CustomerService(session).effective_consents(3)
        assert [(c.channel, c.status, c.source) for c in consents if c.channel == "sms"] == [
            (Channel.SMS, ConsentStatus.WITHDRAWN, "sms reply")
        ]
        assert (
            session.scalar(select(Suppression.reason).where(Suppression.customer_id == 3))
            == "opted out by reply"
        )


def test_a_bad_channels_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "channels.yaml"
    path.write_text("sms:\n  provider: twilio\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as raised:
        load_channels(path)
    assert raised.value.message == (
        f"{path}: sms: Value error, provider 'twilio' needs its 'twilio' block"
    )
    path.write_text("telegram:\n  bot: {token: x}\n  bot_username: b\n  webhok_secret: s\n")
    with pytest.raises(InvalidInput) as raised:
        load_channels(path)
    assert raised.value.message == f"{path}: telegram.webhook_secret: Field required"
    # no file: email only
    assert load_channels(tmp_path / "absent.yaml").transports(region="RU") == {}


def test_the_worker_puts_phone_messages_on_the_call_list_with_no_channels_file(
    tmp_path: Path,
) -> None:
    settings = Settings(channels_file=str(tmp_path / "absent.yaml"))
    router = transports(settings)
    assert sorted(router.transports) == [Channel.EMAIL, Channel.PHONE]
    assert isinstance(router.transports[Channel.PHONE], CallList)


@pytest.fixture
def telegram_on(provider: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The bot in a channels file, pointed at a local server answering as the Bot API."""
    server = provider(bot_api)
    channels = tmp_path / "channels.yaml"
    channels.write_text(yaml.safe_dump({"telegram": {
        "bot": {"token": BOT_TOKEN, "base_url": server.url}, "bot_username": "shop_bot",
        "webhook_secret": BOT_SECRET}}), encoding="utf-8")  # fmt: skip
    monkeypatch.setenv("PATRON_CHANNELS_FILE", str(channels))
    monkeypatch.setenv("PATRON_QUIET_HOURS_START", "0")
    monkeypatch.setenv("PATRON_QUIET_HOURS_END", "0")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_telegram_chat_is_linked_messaged_and_stopped(
    telegram_on: None, engine: Engine, api: TestClient, auth: dict[Role, Headers]
) -> None:
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session:
        store_base(session)
        session.commit()

    link = api.get("/customers/1/telegram-link", headers=auth[Role.MARKETER])
    assert link.status_code == 200, link.text
    url = link.json()["url"]
    assert url.startswith("https://t.me/shop_bot?start=1_")
    start = {"update_id": 1, "message": {
        "message_id": 5, "date": int(time.time()), "text": "/start " + url.split("start=")[1],
        "chat": {"id": 111, "type": "private"}, "from": {"id": 111, "username": "anna"}}}  # fmt: skip
    hook = "/webhooks/telegram"
    forged = api.post(hook, json=start, headers={"X-Telegram-Bot-Api-Secret-Token": "guess"})
    assert (forged.status_code, forged.json()) == (
        403, {"error": "webhooks/telegram: the X-Telegram-Bot-Api-Secret-Token does not match"}
    )  # fmt: skip
    signed = {"X-Telegram-Bot-Api-Secret-Token": BOT_SECRET}
    assert api.post(hook, json=start, headers=signed).json()["linked"] == 1

    with factory() as session:
        SegmentService(session).create(
            SegmentIn(name="tg", rule=parse_rule({"kind": "consent", "channel": "telegram"})),
            actor="t",
        )
        service = CampaignService(session)
        campaign = service.create(
            plan(segment="tg", control_share=0.0, channel="telegram",
                 message={"text": "{{ customer.first_name }}, our news no. {{ customer.id }}"}),
            actor="m",
        )  # fmt: skip
        service.launch(campaign.id, actor="m")
        session.commit()
    settings = get_settings()
    stats = run_worker(factory, transports(settings), settings=settings, until_idle=True)
    assert (stats.sent, stats.failed) == (1, 0)
    with factory() as session:
        message = session.scalars(select(Message)).one()
        assert (message.customer_id, message.address, message.provider_ref) == (1, "111", "1001")

    stop = {"update_id": 2, "message": {"message_id": 6, "date": int(time.time()) + 1, "text": "/stop",
                                        "chat": {"id": 111, "type": "private"}}}  # fmt: skip
    assert api.post(hook, json=stop, headers=signed).json()["opt_out"] == 1
    with factory() as session:
        consents = CustomerService(session).effective_consents(1)
        assert [(c.status, c.source) for c in consents if c.channel == Channel.TELEGRAM] == [
            (ConsentStatus.WITHDRAWN, "telegram reply")
        ]
