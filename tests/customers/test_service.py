"""Identity resolution, merges and consents, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patron.customers.schemas import IdentityIn
from patron.customers.service import CustomerService
from patron.kit.clock import utcnow
from patron.kit.errors import Conflict, InvalidInput
from patron.models import (
    Channel,
    ConsentStatus,
    Customer,
    IdentityKind,
    MergeLog,
    Order,
)
from tests.fixtures.customers import consent, person


def _count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_case_different_emails_are_one_customer(session: Session) -> None:
    service = CustomerService(session)
    first, second = service.resolve(
        [person(email="Ivan@Mail.ru", first_name="Ivan"), person(email=" ivan@mail.RU ")],
        source="shop",
    )
    assert first.customer_id == second.customer_id
    assert (first.created, second.created) == (True, False)
    assert _count(session, Customer) == 1


def test_phone_written_two_ways_matches_a_stored_profile(session: Session) -> None:
    service = CustomerService(session, region="RU")
    [stored] = service.resolve([person(phone="8 (916) 123-45-67", city="Moscow")], source="pos")
    session.commit()
    [again] = service.resolve([person(phone="+7 916 1234567", first_name="Olga")], source="web")
    assert again.customer_id == stored.customer_id
    assert not again.created
    profile = service.get(stored.customer_id)
    assert (profile.first_name, profile.city) == ("Olga", "Moscow")


def test_cards_and_external_ids_match_and_external_ids_are_per_system(session: Session) -> None:
    service = CustomerService(session)
    a, b, c = service.resolve(
        [
            person(card="1234 5678 9012 3", external=("crm", "42")),
            person(card="1234567890123"),
            person(external=("shop", "42")),
        ],
        source="import",
    )
    assert a.customer_id == b.customer_id
    assert c.customer_id != a.customer_id


def test_record_linking_two_profiles_merges_them_into_the_older(session: Session) -> None:
    service = CustomerService(session)
    [by_email] = service.resolve([person(email="a@x.ru", first_name="Anna")], source="web")
    [by_phone] = service.resolve([person(phone="+79161112233", city="Omsk")], source="pos")
    assert by_email.customer_id != by_phone.customer_id
    [both] = service.resolve([person(email="A@X.RU", phone="89161112233")], source="crm")
    assert both.customer_id == by_email.customer_id
    loser = service.get(by_phone.customer_id)
    assert loser.merged_into_id == by_email.customer_id
    winner = service.get(by_email.customer_id)
    assert (winner.first_name, winner.city) == ("Anna", "Omsk")
    kinds = sorted(i.kind.value for i in service.repo.identities_of(winner.id))
    assert kinds == ["email", "phone"]
    assert _count(session, MergeLog) == 1


def test_invalid_identity_keeps_the_rest_of_the_record(session: Session) -> None:
    service = CustomerService(session)
    [result] = service.resolve(
        [person(email="not-an-email", phone="+79161112233", first_name="Ivan")], source="web"
    )
    assert result.created
    assert len(result.issues) == 1
    assert result.issues[0].startswith("email: not an email address: 'not-an-email'")
    assert [i.value for i in service.repo.identities_of(result.customer_id)] == ["+79161112233"]


def test_api_path_refuses_invalid_identity_naming_it(session: Session) -> None:
    with pytest.raises(InvalidInput, match="phone: not a phone number: 'abc'"):
        CustomerService(session).create_or_update(person(phone="abc"), source="api", actor="t")


def test_merge_keeps_every_consent_and_the_latest_decision_wins(session: Session) -> None:
    service = CustomerService(session)
    [older] = service.resolve(
        [
            person(
                email="o@x.ru",
                consents=[consent(Channel.EMAIL, ConsentStatus.WITHDRAWN, "2025-05-01")],
            )
        ],
        source="web",
    )
    [newer] = service.resolve(
        [
            person(
                phone="+79160000001",
                consents=[
                    consent(Channel.EMAIL, ConsentStatus.GRANTED, "2024-01-10"),
                    consent(Channel.SMS, ConsentStatus.GRANTED, "2024-01-10"),
                ],
            )
        ],
        source="pos",
    )
    # the newer profile's opt-in is older than the opt-out: merging must not revive it
    service.merge(newer.customer_id, older.customer_id, reason="test", actor="tester")
    history = service.repo.consents_of([newer.customer_id])
    assert len(history) == 3
    effective = {
        c.channel.value: c.status.value for c in service.effective_consents(newer.customer_id)
    }
    assert effective == {"email": "withdrawn", "sms": "granted"}


def test_pending_consent_is_not_a_decision(session: Session) -> None:
    service = CustomerService(session)
    [r] = service.resolve(
        [
            person(
                email="p@x.ru",
                consents=[
                    consent(Channel.EMAIL, ConsentStatus.GRANTED, "2024-01-01"),
                    consent(Channel.EMAIL, ConsentStatus.PENDING, "2025-01-01"),
                ],
            )
        ],
        source="web",
    )
    [only] = service.effective_consents(r.customer_id)
    assert (only.status, only.decided_at.year) == (ConsentStatus.GRANTED, 2024)


def test_same_consent_imported_twice_is_recorded_once(session: Session) -> None:
    service = CustomerService(session)
    record = person(
        email="d@x.ru", consents=[consent(Channel.SMS, ConsentStatus.GRANTED, "2024-02-02")]
    )
    [r] = service.resolve([record], source="web")
    service.resolve([record], source="web")
    assert len(service.repo.consents_of([r.customer_id])) == 1


def test_unmerge_restores_both_profiles_exactly(session: Session) -> None:
    service = CustomerService(session)
    [a] = service.resolve([person(email="a@x.ru", first_name="Anna")], source="web")
    [b] = service.resolve(
        [
            person(
                phone="+79165550000",
                city="Kazan",
                birth_date=date(1990, 5, 17),
                consents=[consent(Channel.SMS, ConsentStatus.GRANTED, "2024-03-01")],
            )
        ],
        source="pos",
    )
    session.add(
        Order(
            customer_id=b.customer_id,
            source="pos",
            external_id="o-1",
            placed_at=utcnow(),
            total=Decimal("10.00"),
            currency="RUB",
        )
    )
    session.flush()
    log = service.merge(a.customer_id, b.customer_id, reason="same person", actor="ann")
    assert log.filled == {"city": "Kazan", "birth_date": "1990-05-17"}
    assert sorted(log.moved) == ["consents", "events", "identities", "orders"]
    winner = service.get(a.customer_id)
    assert winner.city == "Kazan"

    service.unmerge(log.id, actor="ann")
    winner, loser = service.get(a.customer_id), service.get(b.customer_id)
    assert (winner.city, winner.birth_date, loser.merged_into_id) == (None, None, None)
    assert [i.value for i in service.repo.identities_of(loser.id)] == ["+79165550000"]
    assert [i.value for i in service.repo.identities_of(winner.id)] == ["a@x.ru"]
    assert session.scalar(select(Order.customer_id)) == loser.id
    assert [c.channel for c in service.effective_consents(loser.id)] == [Channel.SMS]
    with pytest.raises(Conflict, match="undone already"):
        service.unmerge(log.id, actor="ann")


def test_unmerge_out_of_order_is_refused(session: Session) -> None:
    service = CustomerService(session)
    ids = [service.resolve([person(email=f"{n}@x.ru")], source="t")[0].customer_id for n in "abc"]
    first = service.merge(ids[1], ids[2], reason="t", actor="t")
    service.merge(ids[0], ids[1], reason="t", actor="t")
    with pytest.raises(Conflict, match="undo that merge first"):
        service.unmerge(first.id, actor="t")


def test_guest_orders_attach_when_the_identity_appears(session: Session) -> None:
    session.add(
        Order(
            source="pos",
            external_id="g-1",
            placed_at=utcnow(),
            total=Decimal("99.90"),
            currency="RUB",
            guest_card="4000123",
        )
    )
    session.flush()
    [r] = CustomerService(session).resolve([person(card="4000 123")], source="crm")
    assert session.scalar(select(Order.customer_id)) == r.customer_id


def test_identity_of_another_profile_is_a_conflict_not_a_merge(session: Session) -> None:
    service = CustomerService(session)
    [a] = service.resolve([person(email="a@x.ru")], source="t")
    [b] = service.resolve([person(email="b@x.ru")], source="t")
    with pytest.raises(Conflict, match=f"belongs to customer {a.customer_id}"):
        service.add_identity(
            b.customer_id, IdentityIn(kind=IdentityKind.EMAIL, value="A@x.ru"), source="api"
        )


def test_fuzzy_candidates_are_proposed_never_merged(session: Session) -> None:
    service = CustomerService(session)
    born = date(1985, 2, 3)
    service.resolve(
        [
            person(
                email="1@x.ru", first_name="Ivan", last_name="Petrov", birth_date=born, city="Tula"
            ),
            person(
                email="2@x.ru", first_name="Petrov", last_name="Ivan", birth_date=born, city=" tula"
            ),
            person(
                email="3@x.ru", first_name="Oleg", last_name="Sidorov", birth_date=born, city="Tula"
            ),
            person(
                email="4@x.ru", first_name="Ivan", last_name="Petrov", birth_date=born, city="Omsk"
            ),
        ],
        source="t",
    )
    [candidate] = service.propose_candidates()
    assert (candidate.customer_a_id, candidate.customer_b_id, candidate.score) == (1, 2, 100.0)
    assert _count(session, MergeLog) == 0
    assert service.propose_candidates() == []
    service.decide_candidate(candidate.id, accept=True, actor="reviewer")
    assert service.get(2).merged_into_id == 1


def test_reads_for_pages_show_identities_full_consent_history_and_merges(
    session: Session,
) -> None:
    # given two profiles, one with a decision and a later pending record, merged
    service = CustomerService(session)
    [a] = service.resolve([person(email="r@x.ru")], source="web")
    [b] = service.resolve(
        [
            person(
                phone="+79165551111",
                consents=[
                    consent(Channel.SMS, ConsentStatus.GRANTED, "2024-03-01"),
                    consent(Channel.SMS, ConsentStatus.PENDING, "2024-04-01"),
                ],
            )
        ],
        source="pos",
    )
    log = service.merge(a.customer_id, b.customer_id, reason="same person", actor="ann")
    # when the pages read the winner
    identities = [i.value for i in service.identities(a.customer_id)]
    history = [c.status for c in service.consent_history(a.customer_id)]
    # then every identity and record shows, pending included, and the merge from both sides
    assert identities == ["r@x.ru", "+79165551111"]
    assert history == [ConsentStatus.GRANTED, ConsentStatus.PENDING]
    assert [m.id for m in service.merges(a.customer_id)] == [log.id]
    assert [m.id for m in service.merges(b.customer_id)] == [log.id]
    assert service.merge_log(log.id) is log
    assert service.merge_log(log.id + 1) is None
