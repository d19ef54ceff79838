"""Patron: an open-source CRM-marketing and loyalty platform."""

__version__ = "0.1.0"
