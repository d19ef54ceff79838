"""The published figures of the real data sets, reproduced by importing them."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine, func, select

from patron.ingest.mapping import preset
from patron.ingest.tasks import import_file
from patron.kit.db import make_sessionmaker
from patron.models import Customer, Order, OrderLine
from tests.fixtures.data import shared_data


def test_online_retail_figures(engine: Engine, tmp_path: Path) -> None:
    path = shared_data("online_retail") / "online_retail_uci_full.csv.xz"
    factory = make_sessionmaker(engine)
    summary = import_file(
        factory,
        "orders",
        path,
        mapping=preset("online-retail", "orders"),
        rejects=tmp_path / "r.csv",
    )
    assert (summary.read, summary.imported, summary.merged, summary.rejected) == (
        541_909,
        541_909,
        0,
        0,
    )
    lines = select(func.count()).select_from(OrderLine).join(Order)
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Customer)) == 4_372
        assert session.scalar(select(func.count()).select_from(Order)) == 25_900
        assert session.scalar(lines.where(Order.customer_id.is_(None))) == 135_080
        assert session.scalar(lines.where(Order.external_id.like("C%"))) == 9_288
        # the usual cleaning: known customer, quantity > 0, unit price > 0
        clean = (
            select(func.count(), func.sum(OrderLine.amount))
            .join(Order)
            .where(Order.customer_id.is_not(None), OrderLine.quantity > 0, OrderLine.unit_price > 0)
        )
        count, revenue = session.execute(clean).one()
        assert count == 397_884
        assert Decimal(revenue).quantize(Decimal("0.01")) == Decimal("8911407.90")


def test_cdnow_master_figures(engine: Engine, tmp_path: Path) -> None:
    path = shared_data("cdnow") / "CDNOW_master.txt"
    factory = make_sessionmaker(engine)
    summary = import_file(
        factory, "orders", path, mapping=preset("cdnow", "orders"), rejects=tmp_path / "r.csv"
    )
    assert (summary.read, summary.imported, summary.rejected) == (69_659, 69_659, 0)
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Customer)) == 23_570
        assert session.scalar(select(func.count()).select_from(Order)) == 69_659
    again = import_file(
        factory, "orders", path, mapping=preset("cdnow", "orders"), rejects=tmp_path / "r.csv"
    )
    assert (again.imported, again.merged) == (0, 69_659)
