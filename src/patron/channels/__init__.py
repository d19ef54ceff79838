"""Channels: transports behind one Protocol (``base``), email over SMTP (``email``)."""
