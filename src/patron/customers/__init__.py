"""The customer hub: profiles, identities, consents, identity resolution and merges."""
