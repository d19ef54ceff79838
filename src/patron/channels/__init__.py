"""Channels: transports behind one Protocol (``base``).

Email over SMTP (``email``); SMS through Twilio or a configured HTTP gateway (``sms``,
``twilio``); Telegram's Bot API (``telegram``); WhatsApp through Twilio or Meta's Cloud
API (``whatsapp``); web push with VAPID (``push``). The HTTP channels share ``http``
(requests in flight, rate limit, reply mapping); ``handover`` is the group commit every
transport uses; ``feedback`` is the neutral form of providers' callbacks and inbound
messages.
"""
