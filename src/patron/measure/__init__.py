"""Measurement: what each campaign truly earned against its control group."""
