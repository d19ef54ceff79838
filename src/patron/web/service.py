"""What the pages show and do. Services never commit: the page handlers do."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy.orm import Session

from patron.analytics.service import AnalyticsService
from patron.customers.service import CustomerService
from patron.kit.clock import utcnow
from patron.kit.errors import Conflict, InvalidInput, NotFound
from patron.loyalty.service import LoyaltyService
from patron.models import AuditRecord, Role, User
from patron.web.passwords import hash_password, verify_password
from patron.web.repository import WebRepository

UI_ROLES = (Role.ADMIN, Role.MARKETER, Role.ANALYST)


@dataclass(frozen=True)
class Who:
    """The logged-in user, as the session cookie names them, and the session generation
    their sessions must carry."""

    username: str
    role: Role
    generation: int


class WebService:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.repo = WebRepository(session)

    # -- accounts ----------------------------------------------------------------------------

    def create_user(self, username: str, password: str, *, role: Role, actor: str) -> User:
        if role not in UI_ROLES:
            raise InvalidInput(f"role {role.value!r} cannot log in; use admin, marketer or analyst")
        _check_password(password)
        if self.repo.user(username) is not None:
            raise Conflict(f"user {username!r} exists already")
        user = User(username=username, password_hash=hash_password(password), role=role)
        self.repo.add(user)
        self.record(actor, "user.create", target=f"user:{username}", role=role.value)
        return user

    def set_password(self, username: str, password: str, *, actor: str) -> None:
        """A new password; every session of the user ends."""
        _check_password(password)
        user = self._user(username)
        user.password_hash = hash_password(password)
        user.session_generation += 1
        self.record(actor, "user.password", target=f"user:{username}")

    def disable(self, username: str, *, actor: str) -> None:
        """The user can no longer log in, and every session of theirs ends."""
        user = self._user(username)
        user.active = False
        user.session_generation += 1
        self.record(actor, "user.disable", target=f"user:{username}")

    def _user(self, username: str) -> User:
        user = self.repo.user(username)
        if user is None:
            raise NotFound(f"user {username!r} does not exist")
        return user

    def log_in(self, username: str, password: str, *, now: datetime | None = None) -> Who:
        """The user, or InvalidInput with one message for every failure, so a login form
        does not tell which usernames exist."""
        user = self.repo.user(username)
        # an unknown name costs the same scrypt as a known one, so timing does not tell
        stored = user.password_hash if user is not None else _dummy_hash()
        matches = verify_password(password, stored)
        if user is None or not user.active or not matches:
            raise InvalidInput("wrong username or password")
        user.last_login_at = now or utcnow()
        self.record(username, "login", target=f"user:{username}")
        return Who(user.username, user.role, user.session_generation)

    def log_out(self, username: str) -> None:
        """End every session of the user, on every browser: a cookie copied before the
        logout names a generation that no longer matches."""
        user = self._user(username)
        user.session_generation += 1
        self.record(username, "logout", target=f"user:{username}")

    def current(self, username: str, generation: int) -> Who | None:
        """The user whose session this is, or None when they are disabled or the session
        belongs to an earlier generation (ended by a logout or a new password)."""
        user = self.repo.user(username)
        if user is None or not user.active or user.session_generation != generation:
            return None
        return Who(user.username, user.role, user.session_generation)

    def audit(self, *, limit: int) -> Sequence[AuditRecord]:
        """The newest audit records first."""
        return self.repo.audit(limit=limit)

    def record(self, actor: str, action: str, *, target: str = "", **details: Any) -> None:
        """Write one change to the audit log."""
        self.repo.add(AuditRecord(actor=actor, action=action, target=target, details=details))

    # -- pages -------------------------------------------------------------------------------

    def dashboard(self) -> dict[str, Any]:
        """Counts, revenue, the newest analysis's tables, and running campaigns."""
        known, guest = self.repo.revenue()
        analysis: dict[str, Any] = {}
        as_of = None
        try:
            run = AnalyticsService(self.session).latest_run()
            analysis, as_of = dict(run.results.get("tables", {})), run.as_of
        except NotFound:
            pass
        stages = {str(r["stage"]): int(r["customers"]) for r in analysis.get("lifecycle", [])}
        return {
            "customers": self.repo.customer_count(),
            "active": stages.get("active", 0) + stages.get("new", 0) + stages.get("won_back", 0),
            "at_risk": stages.get("at_risk", 0),
            "lapsed": stages.get("lapsed", 0),
            "revenue": known,
            "guest_revenue": guest,
            "as_of": as_of,
            "rfm": analysis.get("rfm_segments", []),
            "spend_groups": analysis.get("spend_groups", []),
            "lifecycle": analysis.get("lifecycle", []),
            "campaigns": self.repo.live_campaigns(),
        }

    def search(self, text: str) -> list[Any]:
        return list(CustomerService(self.session).repo.search(text or None, limit=50, offset=0))

    def customer(self, customer_id: int) -> dict[str, Any]:
        """Everything about one customer, for the 360 page."""
        customers = CustomerService(self.session)
        customer = customers.get(customer_id)
        loyalty = LoyaltyService(self.session)
        account = loyalty.account_of(customer_id)
        scores = AnalyticsService(self.session).scores_of(customer_id, limit=1)
        return {
            "customer": customer,
            "identities": customers.identities(customer_id),
            "consents": customers.consent_history(customer_id),
            "orders": self.repo.orders_of(customer_id, limit=50),
            "events": self.repo.events_of(customer_id, limit=50),
            "messages": self.repo.messages_of(customer_id, limit=50),
            "account": account,
            "balance": loyalty.balance(account, now=utcnow()) if account is not None else None,
            "ledger": loyalty.ledger(account, limit=20, offset=0) if account is not None else [],
            "score": scores[0] if scores else None,
            "merges": customers.merges(customer_id),
        }


def _check_password(password: str) -> None:
    if len(password) < 10:
        raise InvalidInput("password: at least 10 characters")


@cache
def _dummy_hash() -> str:
    """A hash no password matches, made on the first failed login rather than at import:
    scrypt costs tens of milliseconds, which every command loading the app would pay."""
    return hash_password(secrets.token_urlsafe(16))
