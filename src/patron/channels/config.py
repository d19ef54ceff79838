"""Which providers carry which channel: one validated file (``PATRON_CHANNELS_FILE``).

Email always goes through SMTP (its settings are environment variables). The other
channels are on only when the file names a provider for them; the worker's router parks
a message of a channel with none, with the reason. The webhook secrets live beside the
provider they prove, so one file says everything about a provider.

.. code-block:: yaml

    sms:
      provider: twilio                # or: gateway, with a `gateway:` block
      twilio: {account_sid: AC..., auth_token: ..., sender: "+15005550006"}
    telegram:
      bot: {token: "123:ABC"}
      bot_username: shop_bot
      webhook_secret: a-long-random-string
    whatsapp:
      provider: cloud                 # or: twilio
      cloud: {access_token: ..., phone_number_id: "1234567890"}
      app_secret: ...
      verify_token: ...
    push:
      vapid: {private_key: ..., subject: "mailto:crm@shop.example"}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from patron.channels.base import Transport
from patron.channels.push import VapidSettings, WebPush
from patron.channels.sms import HttpGatewaySettings, HttpGatewaySms, TwilioSms
from patron.channels.telegram import TelegramBot, TelegramSettings
from patron.channels.twilio import TwilioSettings
from patron.channels.whatsapp import CloudWhatsApp, CloudWhatsAppSettings, TwilioWhatsApp
from patron.kit.errors import InvalidInput
from patron.models.consent import Channel


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SmsConfig(_Section):
    provider: Literal["twilio", "gateway"]
    twilio: TwilioSettings | None = None
    gateway: HttpGatewaySettings | None = None
    callback_secret: SecretStr | None = Field(
        default=None, description="The key of the gateway's callback HMAC, when it signs."
    )

    @model_validator(mode="after")
    def _given(self) -> Self:
        if getattr(self, self.provider) is None:
            raise ValueError(f"provider {self.provider!r} needs its {self.provider!r} block")
        return self


class TelegramConfig(_Section):
    bot: TelegramSettings
    bot_username: str = Field(min_length=1)
    webhook_secret: SecretStr = Field(
        description="Telegram sends it back in X-Telegram-Bot-Api-Secret-Token "
        "(setWebhook's secret_token); it also signs the chat-link tokens."
    )


class WhatsAppConfig(_Section):
    provider: Literal["cloud", "twilio"]
    cloud: CloudWhatsAppSettings | None = None
    twilio: TwilioSettings | None = None
    app_secret: SecretStr | None = Field(
        default=None, description="Signs the Cloud API's webhooks (X-Hub-Signature-256)."
    )
    verify_token: SecretStr | None = Field(
        default=None, description="The Cloud API's subscription challenge answers to it."
    )

    @model_validator(mode="after")
    def _given(self) -> Self:
        if getattr(self, self.provider) is None:
            raise ValueError(f"provider {self.provider!r} needs its {self.provider!r} block")
        return self


class PushConfig(_Section):
    vapid: VapidSettings


class ChannelsConfig(_Section):
    """The providers of the channels beyond email; an empty file turns none on."""

    sms: SmsConfig | None = None
    telegram: TelegramConfig | None = None
    whatsapp: WhatsAppConfig | None = None
    push: PushConfig | None = None

    def transports(self, *, region: str) -> dict[Channel, Transport]:
        """A transport for each configured channel."""
        found: dict[Channel, Transport] = {}
        if self.sms is not None:
            if self.sms.twilio is not None and self.sms.provider == "twilio":
                found[Channel.SMS] = TwilioSms(self.sms.twilio, region=region)
            elif self.sms.gateway is not None:
                found[Channel.SMS] = HttpGatewaySms(self.sms.gateway, region=region)
        if self.telegram is not None:
            found[Channel.TELEGRAM] = TelegramBot(self.telegram.bot)
        if self.whatsapp is not None:
            if self.whatsapp.cloud is not None and self.whatsapp.provider == "cloud":
                found[Channel.WHATSAPP] = CloudWhatsApp(self.whatsapp.cloud, region=region)
            elif self.whatsapp.twilio is not None:
                found[Channel.WHATSAPP] = TwilioWhatsApp(self.whatsapp.twilio, region=region)
        if self.push is not None:
            found[Channel.PUSH] = WebPush(self.push.vapid)
        return found


def load_channels(path: str | Path | None) -> ChannelsConfig:
    """The file's configuration; none at all when no file is named or it does not exist
    (email only, the default).

    Raises
    ------
    InvalidInput
        The file does not parse, or a field is wrong: named with its place in the file.
    """
    if not path or not Path(path).exists():
        return ChannelsConfig()
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML: {exc}") from None
    try:
        return ChannelsConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidInput(f"{path}: {where}: {first['msg']}") from None
