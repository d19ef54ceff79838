"""Imports end to end through ``import_file``, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from patron.customers.service import CustomerService
from patron.ingest.mapping import Mapping
from patron.ingest.tasks import import_file
from patron.kit.db import make_sessionmaker
from patron.models import Customer, Event, Identity, Order, OrderKind, OrderLine, Product

CUSTOMERS = """customer_id;first_name;last_name;email;phone;card;city;birth_date;consent_email;consent_at;loyalty_level
C1;Ivan;Petrov;Ivan.Petrov@Mail.ru ;8 (916) 123-45-67;;Moscow;1985-02-03;yes;2024-01-05T10:00:00+03:00;gold
C2;Olga;Sidorova;bad-email;+7 903 000 11 22;7000 0001;Tula;03.04.1990;no;2024-02-01T09:00:00+03:00;
W9;Ivan;;ivan.petrov@mail.ru;;;;;no;2025-06-01T12:00:00+03:00;
C3;;;;;;Omsk;;;;
"""

ORDERS = """order_id,customer_id,card,placed_at,sku,name,category,quantity,unit_price,currency
S1,C1,,2025-03-01T10:00:00+03:00,MILK,Milk,dairy,2,1.50,RUB
S1,C1,,2025-03-01T10:00:00+03:00,BREAD,Bread,bakery,1,0.99,RUB
S2,,70000001,2025-03-02T11:00:00+03:00,MILK,Milk,dairy,1,1.50,RUB
S3,,,2025-03-03T12:00:00,TEA,Tea,beverages,3,2.00,RUB
S4,C9,,2025-03-04T12:00:00Z,TEA,Tea,beverages,1,2.00,RUB
CS1,C1,,2025-03-05T10:00:00+03:00,MILK,Milk,dairy,-1,1.50,RUB
S5,C1,,not a date,TEA,Tea,beverages,1,2.00,RUB
S6,C1,,2025-03-06T10:00:00+03:00,TEA,Tea,beverages,x,2.00,RUB
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_customers_resolve_merge_and_report_bad_values(engine: Engine, tmp_path: Path) -> None:
    factory = make_sessionmaker(engine)
    path = _write(tmp_path, "customers.csv", CUSTOMERS)
    summary = import_file(factory, "customers", path, mapping=Mapping(), source="shop")

    assert (summary.read, summary.imported, summary.merged, summary.rejected) == (4, 3, 1, 0)
    assert summary.fields_dropped == 1
    assert summary.rejects_path == tmp_path / "customers.csv.rejects.csv"
    with summary.rejects_path.open(encoding="utf-8") as report:
        [problem] = list(csv.DictReader(report))
    assert (problem["line"], problem["outcome"]) == ("3", "kept, value dropped")
    assert problem["reason"].startswith("email: not an email address: 'bad-email'")
    with make_sessionmaker(engine)() as session:
        service = CustomerService(session)
        ivan = service.get(1)
        assert (ivan.first_name, ivan.last_name, ivan.city) == ("Ivan", "Petrov", "Moscow")
        assert ivan.attributes == {"loyalty_level": "gold"}
        olga = service.get(2)
        assert str(olga.birth_date) == "1990-04-03"
        assert [i.value for i in service.repo.identities_of(2)] == [
            "C2",
            "+79030001122",
            "70000001",
        ]
        # W9 is Ivan again (same email, other case); his later opt-out is in force
        [email] = service.effective_consents(1)
        assert (email.status.value, email.decided_at.isoformat()) == (
            "withdrawn",
            "2025-06-01T09:00:00+00:00",
        )
        assert len(service.repo.consents_of([1])) == 2
        assert _count(session, Customer) == 3


def test_import_twice_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    factory = make_sessionmaker(engine)
    customers = _write(tmp_path, "customers.csv", CUSTOMERS)
    orders = _write(tmp_path, "orders.csv", ORDERS)
    import_file(factory, "customers", customers, mapping=Mapping(), source="shop")
    import_file(factory, "orders", orders, mapping=Mapping(), source="shop")
    with factory() as session:
        before = [_count(session, m) for m in (Customer, Identity, Order, OrderLine)]
    again_customers = import_file(factory, "customers", customers, mapping=Mapping(), source="shop")
    again_orders = import_file(factory, "orders", orders, mapping=Mapping(), source="shop")
    assert (again_customers.imported, again_customers.merged) == (0, 4)
    assert (
        again_orders.read,
        again_orders.imported,
        again_orders.merged,
        again_orders.rejected,
    ) == (8, 0, 6, 2)
    with factory() as session:
        assert [_count(session, m) for m in (Customer, Identity, Order, OrderLine)] == before


def test_orders_guests_returns_and_rejects(engine: Engine, tmp_path: Path) -> None:
    factory = make_sessionmaker(engine)
    import_file(
        factory, "customers", _write(tmp_path, "c.csv", CUSTOMERS), mapping=Mapping(), source="shop"
    )
    summary = import_file(
        factory,
        "orders",
        _write(tmp_path, "o.csv", ORDERS),
        mapping=Mapping(return_prefix="C"),
        source="shop",
    )
    assert (summary.read, summary.imported, summary.merged, summary.rejected) == (8, 6, 0, 2)
    with summary.rejects_path.open(encoding="utf-8") as report:  # type: ignore[union-attr]
        reasons = [(r["line"], r["reason"]) for r in csv.DictReader(report)]
    assert reasons == [
        ("8", "placed_at: not a date or time: 'not a date'"),
        ("9", "quantity: not a number: 'x'"),
    ]
    with factory() as session:
        orders = {o.external_id: o for o in session.scalars(select(Order))}
        assert orders["S1"].total == Decimal("3.99")
        assert [line.sku for line in orders["S1"].lines] == ["MILK", "BREAD"]
        # the guest with Olga's card belongs to Olga at once; the cardless guest stays a guest
        assert orders["S2"].customer_id == 2
        assert (orders["S3"].customer_id, orders["S3"].guest_card) == (None, None)
        assert orders["S3"].placed_at.isoformat() == "2025-03-03T12:00:00+00:00"
        # an unknown customer reference makes a profile with that source id
        new = session.scalar(select(Identity).where(Identity.value == "C9"))
        assert new is not None and orders["S4"].customer_id == new.customer_id
        ret = orders["CS1"]
        assert (ret.kind, ret.total, ret.original_order_id) == (
            OrderKind.RETURN,
            Decimal("-1.50"),
            orders["S1"].id,
        )


def test_guest_order_is_attached_when_its_card_appears_later(
    engine: Engine, tmp_path: Path
) -> None:
    factory = make_sessionmaker(engine)
    import_file(
        factory, "orders", _write(tmp_path, "o.csv", ORDERS), mapping=Mapping(), source="shop"
    )
    with factory() as session:
        guest = session.scalar(select(Order).where(Order.external_id == "S2"))
        assert guest is not None and (guest.customer_id, guest.guest_card) == (None, "70000001")
    import_file(
        factory, "customers", _write(tmp_path, "c.csv", CUSTOMERS), mapping=Mapping(), source="shop"
    )
    with factory() as session:
        olga = session.scalar(select(Identity.customer_id).where(Identity.value == "C2"))
        assert session.scalar(select(Order.customer_id).where(Order.external_id == "S2")) == olga


def test_lines_of_one_order_split_across_chunks_stay_one_order(
    engine: Engine, tmp_path: Path
) -> None:
    factory = make_sessionmaker(engine)
    path = _write(tmp_path, "o.csv", ORDERS)
    summary = import_file(factory, "orders", path, mapping=Mapping(), source="shop", chunk_rows=1)
    assert summary.imported == 6
    with factory() as session:
        s1 = session.scalar(select(Order).where(Order.external_id == "S1"))
        assert s1 is not None
        assert (s1.total, len(s1.lines)) == (Decimal("3.99"), 2)


def test_mapping_flags_products_and_events(engine: Engine, tmp_path: Path) -> None:
    factory = make_sessionmaker(engine)
    products = _write(
        tmp_path,
        "p.csv",
        "Артикул;Название;Цена;Цвет\nA1;Молоко;89,90;white\nA2;Хлеб;abc;\n;Пусто;1;\n",
    )
    mapping = Mapping(columns={"sku": "Артикул", "name": "Название", "price": "Цена"})
    summary = import_file(factory, "products", products, mapping=mapping)
    assert (summary.read, summary.imported, summary.rejected, summary.fields_dropped) == (
        3,
        2,
        1,
        1,
    )
    again = import_file(factory, "products", products, mapping=mapping)
    assert (again.imported, again.merged, again.rejected) == (0, 2, 1)
    with factory() as session:
        milk = session.scalar(select(Product).where(Product.sku == "A1"))
        assert milk is not None and (milk.price, milk.attributes) == (
            Decimal("89.90"),
            {"Цвет": "white"},
        )

    import_file(
        factory, "customers", _write(tmp_path, "c.csv", CUSTOMERS), mapping=Mapping(), source="shop"
    )
    events = _write(
        tmp_path,
        "e.jsonl",
        '{"event_id": "E1", "customer_id": "C1", "type": "form_submitted", "occurred_at": "2025-01-01T10:00:00+03:00", "properties": {"form": "survey"}}\n'
        '{"event_id": "E2", "email": "OLGA@x.ru", "type": "call", "occurred_at": "2025-01-02T10:00:00Z", "channel": "phone"}\n'
        '{"event_id": "E3", "type": "visit"}\n',
    )
    summary = import_file(factory, "events", events, mapping=Mapping(), source="shop")
    assert (summary.read, summary.imported, summary.rejected) == (3, 2, 1)
    assert import_file(factory, "events", events, mapping=Mapping(), source="shop").merged == 2
    with factory() as session:
        stored = {e.external_id: e for e in session.scalars(select(Event))}
        assert (stored["E1"].customer_id, stored["E1"].properties) == (1, {"form": "survey"})
        assert (stored["E2"].customer_id, stored["E2"].properties) == (None, {"channel": "phone"})


def test_customers_from_excel(engine: Engine, tmp_path: Path) -> None:
    from datetime import datetime

    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Клиент", "Телефон", "Дата рождения", "Город"])
    sheet.append(["K-1", "8 903 111 22 33", datetime(1979, 12, 31), "Пермь"])
    sheet.append(["K-2", 79031112233, None, None])
    path = tmp_path / "clients.xlsx"
    book.save(path)
    mapping = Mapping(
        columns={
            "customer_id": "Клиент",
            "phone": "Телефон",
            "birth_date": "Дата рождения",
            "city": "Город",
        }
    )
    summary = import_file(
        make_sessionmaker(engine), "customers", path, mapping=mapping, source="erp"
    )
    assert (summary.read, summary.imported, summary.merged) == (2, 1, 1)
    with make_sessionmaker(engine)() as session:
        service = CustomerService(session)
        client = service.get(1)
        assert (str(client.birth_date), client.city) == ("1979-12-31", "Пермь")
        values = sorted(i.value for i in service.repo.identities_of(1))
        assert values == ["+79031112233", "K-1", "K-2"]
