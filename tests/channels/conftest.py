"""The provider server every channel test may start."""

from tests.fixtures.http_provider import provider

__all__ = ["provider"]
