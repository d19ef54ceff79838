"""Segments: a rule language over the customer hub and analytics, compiled to SQL, with
materialised membership and its history."""
