"""The web interface for marketers: server-rendered pages on the API's application."""
