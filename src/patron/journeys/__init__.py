"""Triggered campaigns: triggers that admit one customer at a time, and journeys of steps."""
