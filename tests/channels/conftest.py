"""The provider server every channel test may start, and the closing of transports."""

from tests.fixtures.http_provider import closing, provider

__all__ = ["closing", "provider"]
