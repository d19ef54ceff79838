"""Campaigns: the plan, its audit trail, the frozen audience with its control group and
test wave, and personal messages from sandboxed templates."""
