"""Dispatch: the transactional outbox, workers, retries, tracking and feedback."""
