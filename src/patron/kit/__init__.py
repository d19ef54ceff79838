"""Shared plumbing: settings, database session, money, clock and domain errors."""
