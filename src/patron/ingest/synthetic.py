"""Synthetic retail data: a seeded simulator of a Russian grocery-and-home chain.

Nothing here describes real people. ``generate`` writes files shaped like a retailer's
exports so that the importers, the customer hub and the analytics can be run end to end
and checked against exact answers:

* ``products.csv``: the catalogue, about 400 products in 12 categories;
* ``customers.csv``: one row per person plus duplicate rows (from web forms and calls),
  with contacts written in the many ways people write them, and email/SMS consents given
  at different times;
* ``orders.csv``: one row per order line, with guest orders (some showing a loyalty card)
  and returns;
* ``events.jsonl``: site visits, forms, calls and abandoned carts;
* ``truth.json``: what the simulator knows to be true (:class:`Truth`).

The behaviour follows the source articles. Purchasing is buy-till-you-die (the BG/NBD
story of Fader, Hardie and Lee, 2005, "Counting your customers the easy way"): each
person buys at a Gamma-distributed rate and, after every purchase, drops out with a
Beta-distributed probability. Basket size follows a Gamma-distributed spend multiplier.
Together they give roughly the spend mix the articles report, where the top 2% of
customers make about 10% of turnover and some 38% make about 6.5%. December and weekends
are busier. Each person favours two or three categories, and some categories are bought
together (baby and pets with household, beverages with snacks, meat with produce).

Persons are simulated in shards of 1,000, each with its own random stream keyed on
(seed, shard number), and written out about ``block`` persons at a time. The files
therefore depend on the seed and the other arguments but not on ``block``, and memory
stays bounded however many persons are asked for.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from patron.kit.errors import InvalidInput
from patron.kit.money import round_money

if TYPE_CHECKING:
    from _csv import Writer

__all__ = ["Truth", "generate"]

_SHARD = 1_000
"""Persons per random stream; the unit the output is reproducible in."""

_Ints = npt.NDArray[np.int64]
_Floats = npt.NDArray[np.float64]
_Bools = npt.NDArray[np.bool_]

_DAY = 86_400
_OFFSET = "+03:00"  # every timestamp is Moscow wall-clock time, as the chain's head office keeps it
_EPOCH = date(1970, 1, 1)

# Buy-till-you-die parameters, rates per day of average season. Tuned so that the default
# two-year run gives about 5 purchase orders per person and close to the articles' spend
# mix (seed 7: the top 2% of buyers make 12% of turnover, the bottom 38% make 7%). The
# U-shaped Beta(0.4, 2) dropout makes both one-off buyers and loyal regulars.
_RATE_SHAPE, _RATE_SCALE = 10.0, 0.0018
_DROPOUT_A, _DROPOUT_B = 0.4, 2.0
_SPEND_SHAPE = 4.0
_PROSPECT = 0.05
_LINES_MEAN = 1.4  # extra lines beyond the first, for a spend multiplier of 1
_QUANTITY_MEAN = 0.35  # extra units beyond the first, for a spend multiplier of 1
_FAVOURITE = 0.75  # share of lines from the person's own categories
_PAIR = 0.4  # chance that a line from a paired category is followed by its partner
_GUEST = 0.08 / 0.92  # guest orders per identified order, so guests are 8% of all orders
_RETURN = 0.03
_FULL_RETURN = 0.4
_EVENTS_MEAN = 1.5
_DUPLICATE = 0.04

_CATEGORIES: tuple[str, ...] = (
    "dairy", "bakery", "produce", "meat", "beverages", "snacks",
    "household", "personal care", "baby", "pets", "electronics", "home",
)  # fmt: skip
# How often a line comes from each category, for shoppers without a habit of their own.
_POPULARITY = np.array([16, 12, 14, 10, 10, 8, 8, 6, 3, 4, 3, 6], dtype=np.float64)
_PARTNER = {"baby": "household", "pets": "household", "beverages": "snacks",
            "meat": "produce", "bakery": "dairy"}  # fmt: skip

# (item, typical price in roubles) per category; brands multiply the price.
_ITEMS: dict[str, tuple[tuple[str, float], ...]] = {
    "dairy": (("Milk 2.5% 1 l", 85), ("Milk 3.2% 0.9 l", 95), ("Kefir 1% 930 ml", 90),
              ("Smetana 20% 300 g", 110), ("Tvorog 5% 200 g", 120), ("Butter 82.5% 180 g", 210),
              ("Yogurt strawberry 270 g", 75), ("Ryazhenka 4% 500 ml", 80),
              ("Cheese Rossiysky 200 g", 230), ("Cheese Gouda 250 g", 320),
              ("Glazed curd bar 45 g", 45)),
    "bakery": (("Borodinsky bread 400 g", 65), ("White loaf 380 g", 55), ("Baton sliced 400 g", 60),
               ("Rye bread 350 g", 58), ("Croissant 70 g", 70), ("Bubliki 300 g", 90),
               ("Sushki vanilla 200 g", 80), ("Honey pryanik 350 g", 140), ("Lavash 250 g", 50)),
    "produce": (("Potatoes 1 kg", 60), ("Carrots 1 kg", 55), ("Onions 1 kg", 45),
                ("Tomatoes 500 g", 150), ("Cucumbers 500 g", 120), ("Apples Golden 1 kg", 140),
                ("Bananas 1 kg", 130), ("Mandarins 1 kg", 190), ("Cabbage 1 kg", 40),
                ("Beetroot 1 kg", 45), ("Dill 50 g", 50)),
    "meat": (("Chicken breast 1 kg", 480), ("Pork neck 1 kg", 620), ("Beef mince 400 g", 360),
             ("Doktorskaya sausage 400 g", 330), ("Pelmeni 800 g", 420),
             ("Chicken thighs 1 kg", 350), ("Salmon fillet 300 g", 690), ("Herring 400 g", 260),
             ("Sosiski 500 g", 310)),
    "beverages": (("Mineral water 1.5 l", 70), ("Kvass 1.5 l", 110), ("Black tea 100 bags", 260),
                  ("Coffee beans 1 kg", 1490), ("Instant coffee 95 g", 390),
                  ("Apple juice 1 l", 140), ("Cranberry mors 1 l", 150),
                  ("Tarkhun lemonade 0.5 l", 75), ("Green tea 25 bags", 140)),
    "snacks": (("Potato chips 150 g", 150), ("Sunflower seeds 300 g", 110),
               ("Milk chocolate 90 g", 95), ("Zefir 250 g", 160), ("Crackers 180 g", 90),
               ("Salted peanuts 150 g", 120), ("Wafers 200 g", 85),
               ("Chocolate candies 200 g", 240)),
    "household": (("Laundry powder 3 kg", 690), ("Dish soap 500 ml", 180),
                  ("Toilet paper 8 rolls", 310), ("Paper towels 2 rolls", 150),
                  ("Trash bags 30 pcs", 140), ("Sponges 5 pcs", 95), ("Floor cleaner 1 l", 220),
                  ("Fabric softener 2 l", 390)),
    "personal care": (("Shampoo 400 ml", 380), ("Shower gel 250 ml", 260),
                      ("Toothpaste 100 ml", 190), ("Toothbrush medium", 150),
                      ("Deodorant 150 ml", 290), ("Hand cream 75 ml", 160),
                      ("Razor blades 4 pcs", 690), ("Soap 4x90 g", 170)),
    "baby": (("Diapers size 3 60 pcs", 1290), ("Baby wipes 72 pcs", 190),
             ("Baby puree apple 90 g", 60), ("Infant formula 400 g", 720),
             ("Baby porridge 200 g", 160), ("Baby shampoo 200 ml", 260)),
    "pets": (("Dry cat food 1.5 kg", 690), ("Wet cat food 85 g", 45), ("Dry dog food 3 kg", 1390),
             ("Cat litter 5 l", 390), ("Dog treats 100 g", 190), ("Wet dog food 400 g", 140)),
    "electronics": (("AA batteries 4 pcs", 290), ("USB-C cable 1 m", 490),
                    ("Wireless earbuds", 2990), ("Power bank 10000 mAh", 1890),
                    ("LED bulb E27 10 W", 150), ("Phone charger 20 W", 990),
                    ("Bluetooth speaker", 2490), ("Electric kettle 1.7 l", 1990)),
    "home": (("Frying pan 26 cm", 1290), ("Bath towel 70x140", 690), ("Storage box 10 l", 490),
             ("Candle set 3 pcs", 390), ("Mug 350 ml", 290), ("Cutting board", 450),
             ("Bed linen set", 2490), ("Food containers 3 pcs", 420)),
}  # fmt: skip
_BRANDS = ("Vesna", "Zarya", "Severnaya", "Volzhanka", "Kedr", "Rodnik", "Altai", "Uralochka",
           "Baikal", "Solnechny", "Dobry Dom", "Lukoshko")  # fmt: skip

# (Cyrillic, Latin) pairs; the Latin form builds email addresses and Telegram handles.
_MALE_NAMES = (
    ("Александр", "aleksandr"), ("Сергей", "sergey"), ("Дмитрий", "dmitry"), ("Андрей", "andrey"),
    ("Алексей", "aleksey"), ("Максим", "maksim"), ("Евгений", "evgeny"), ("Иван", "ivan"),
    ("Михаил", "mikhail"), ("Николай", "nikolay"), ("Артём", "artem"), ("Владимир", "vladimir"),
    ("Павел", "pavel"), ("Роман", "roman"), ("Олег", "oleg"), ("Игорь", "igor"),
    ("Денис", "denis"), ("Кирилл", "kirill"),
)  # fmt: skip
_FEMALE_NAMES = (
    ("Елена", "elena"), ("Ольга", "olga"), ("Наталья", "natalya"), ("Анна", "anna"),
    ("Татьяна", "tatyana"), ("Мария", "maria"), ("Ирина", "irina"), ("Екатерина", "ekaterina"),
    ("Светлана", "svetlana"), ("Юлия", "yulia"), ("Анастасия", "anastasia"), ("Дарья", "darya"),
    ("Марина", "marina"), ("Ксения", "ksenia"), ("Виктория", "viktoria"), ("Полина", "polina"),
    ("Людмила", "lyudmila"), ("Галина", "galina"),
)  # fmt: skip
_SURNAMES = (
    ("Иванов", "ivanov"), ("Смирнов", "smirnov"), ("Кузнецов", "kuznetsov"), ("Попов", "popov"),
    ("Васильев", "vasilyev"), ("Петров", "petrov"), ("Соколов", "sokolov"),
    ("Михайлов", "mikhaylov"), ("Новиков", "novikov"), ("Фёдоров", "fedorov"),
    ("Морозов", "morozov"), ("Волков", "volkov"), ("Алексеев", "alekseev"), ("Лебедев", "lebedev"),
    ("Семёнов", "semenov"), ("Егоров", "egorov"), ("Павлов", "pavlov"), ("Козлов", "kozlov"),
    ("Степанов", "stepanov"), ("Николаев", "nikolaev"), ("Орлов", "orlov"), ("Андреев", "andreev"),
    ("Макаров", "makarov"), ("Никитин", "nikitin"), ("Захаров", "zakharov"), ("Зайцев", "zaytsev"),
    ("Соловьёв", "solovyev"), ("Борисов", "borisov"), ("Яковлев", "yakovlev"),
    ("Григорьев", "grigoryev"), ("Романов", "romanov"), ("Воробьёв", "vorobyev"),
    ("Сергеев", "sergeev"), ("Фролов", "frolov"), ("Белов", "belov"),
    ("Ковалевский", "kovalevsky"), ("Ильин", "ilyin"), ("Гусев", "gusev"), ("Титов", "titov"),
    ("Медведев", "medvedev"),
)  # fmt: skip
_PATRONYMICS = (
    ("Александрович", "Александровна"), ("Сергеевич", "Сергеевна"), ("Дмитриевич", "Дмитриевна"),
    ("Андреевич", "Андреевна"), ("Алексеевич", "Алексеевна"), ("Владимирович", "Владимировна"),
    ("Николаевич", "Николаевна"), ("Иванович", "Ивановна"), ("Михайлович", "Михайловна"),
    ("Викторович", "Викторовна"), ("Юрьевич", "Юрьевна"), ("Петрович", "Петровна"),
)  # fmt: skip
# (city, region, IANA zone, share of customers, stores in the city)
_CITIES = (
    ("Москва", "Москва", "Europe/Moscow", 30, 7),
    ("Санкт-Петербург", "Санкт-Петербург", "Europe/Moscow", 14, 4),
    ("Новосибирск", "Новосибирская область", "Asia/Novosibirsk", 6, 2),
    ("Екатеринбург", "Свердловская область", "Asia/Yekaterinburg", 6, 1),
    ("Казань", "Республика Татарстан", "Europe/Moscow", 5, 1),
    ("Нижний Новгород", "Нижегородская область", "Europe/Moscow", 5, 1),
    ("Челябинск", "Челябинская область", "Asia/Yekaterinburg", 4, 1),
    ("Самара", "Самарская область", "Europe/Samara", 4, 1),
    ("Омск", "Омская область", "Asia/Omsk", 4, 1),
    ("Ростов-на-Дону", "Ростовская область", "Europe/Moscow", 4, 1),
    ("Уфа", "Республика Башкортостан", "Asia/Yekaterinburg", 4, 1),
    ("Красноярск", "Красноярский край", "Asia/Krasnoyarsk", 4, 1),
    ("Пермь", "Пермский край", "Asia/Yekaterinburg", 3, 1),
    ("Воронеж", "Воронежская область", "Europe/Moscow", 3, 1),
    ("Краснодар", "Краснодарский край", "Europe/Moscow", 4, 1),
)
_DOMAINS = ("mail.ru", "yandex.ru", "gmail.com", "bk.ru", "list.ru", "inbox.ru", "rambler.ru")
_DOMAIN_SHARE = np.array([30, 30, 20, 6, 6, 5, 3], dtype=np.float64)
_SOURCES = ("pos", "web", "call_centre")
_DECISIONS = ("", "yes", "no")

# Month (Jan..Dec) and weekday (Mon..Sun) multipliers of the purchase rate.
_MONTH = np.array([0.85, 0.88, 0.95, 0.95, 1.0, 0.95, 0.92, 0.95, 1.0, 1.02, 1.08, 1.45])
_WEEKDAY = np.array([0.92, 0.9, 0.92, 0.95, 1.08, 1.25, 1.15])
_HOURS_OFFLINE = np.array([0, 0, 0, 0, 0, 0, 0, 0.2, 0.6, 1, 1.2, 1.4,
                           1.7, 1.6, 1.3, 1.3, 1.5, 2.0, 2.3, 2.1, 1.6, 1.0, 0.4, 0])  # fmt: skip
_HOURS_ONLINE = np.array([0.3, 0.15, 0.1, 0.05, 0.05, 0.1, 0.3, 0.6, 0.9, 1, 1.1, 1.2,
                          1.3, 1.2, 1.2, 1.2, 1.3, 1.5, 1.7, 1.9, 2.1, 2.0, 1.5, 0.8])  # fmt: skip

_EVENT_TYPES = ("site_visit", "form_submitted", "call", "cart_abandoned")
_EVENT_SHARE = np.array([0.55, 0.15, 0.15, 0.15])
_FORMS = ("newsletter", "feedback", "loyalty_signup", "delivery_address")
_CALL_REASONS = ("order_status", "complaint", "loyalty_points", "product_question")
_DEVICES = ("mobile", "desktop")

# Affine maps x -> (a*x + b) mod 10**k are bijections when a is coprime to 10, so derived
# phones, cards and ids never collide between persons yet do not reveal the person number.
_PHONE_A, _CARD_A, _ALIAS_A = 387_420_489, 7_654_321, 9_301_933

_PRODUCT_FIELDS = ("sku", "name", "category", "brand", "price")
_CUSTOMER_FIELDS = (
    "customer_id", "first_name", "last_name", "middle_name", "birth_date", "gender", "city",
    "region", "timezone", "language", "email", "phone", "card", "telegram", "consent_email",
    "consent_sms", "consent_at", "consent_source",
)  # fmt: skip
_ORDER_FIELDS = (
    "order_id", "customer_id", "card", "placed_at", "store", "channel", "sku", "name",
    "category", "quantity", "unit_price", "currency",
)  # fmt: skip


@dataclass(frozen=True)
class Truth:
    """What the simulator knows to be true about the files it wrote; also ``truth.json``.

    Attributes
    ----------
    persons : int
        Distinct real people.
    customer_rows : int
        Rows of customers.csv: ``persons + duplicate_rows``.
    duplicate_rows : int
        Extra rows (ids ``W...`` from web forms, ``K...`` from calls) describing a person
        who already has a primary row (``C...``).
    email_marketing_granted : int
        Persons whose latest explicit email decision, by ``consent_at``, is ``yes``.
    products : int
        Rows of products.csv.
    orders : int
        Distinct purchase order ids (``S...``), guests included, returns excluded.
    return_orders : int
        Distinct return order ids (``C`` + the original order id).
    order_lines : int
        Rows of orders.csv, purchases and returns.
    guest_orders : int
        Purchase orders without a customer_id.
    revenue : Decimal
        Sum of quantity * unit_price over all lines, returns (negative) and guests included.
    guest_revenue : Decimal
        The same over the lines without a customer_id.
    events : int
        Lines of events.jsonl.
    """

    persons: int
    customer_rows: int
    duplicate_rows: int
    email_marketing_granted: int
    products: int
    orders: int
    return_orders: int
    order_lines: int
    guest_orders: int
    revenue: Decimal
    guest_revenue: Decimal
    events: int


@dataclass(frozen=True)
class _World:
    """Everything shared by all shards: calendar, catalogue, stores and id offsets."""

    seed: int
    start: int  # Moscow wall-clock seconds since 1970 of the window's first midnight
    days: int
    cumulative: _Floats  # seasonal intensity summed to each midnight; it averages 1 a day
    sku: list[str]
    name: list[str]
    category: list[str]
    price: _Ints  # kopecks
    price_text: list[str]
    product_part: list[str]  # csv-formatted sku,name,category
    price_part: list[str]  # csv-formatted unit_price,currency
    product_category: _Ints
    # cumulative popularity within each category, category c spanning (c, c + 1], so that
    # searchsorted(product_cdf, c + uniform) picks a product of category c
    product_cdf: _Floats
    brand: list[str]
    city_share: _Floats
    city_first_store: _Ints
    city_stores: _Ints
    phone_b: int
    card_b: int
    alias_b: int

    @property
    def end(self) -> int:
        return self.start + self.days * _DAY

    @property
    def horizon(self) -> float:
        """The end of the history in seasonal time."""
        return float(self.cumulative[-1])

    def operational(self, day: _Floats) -> _Floats:
        """Map days since the history began to seasonal time, in which purchases arrive at
        a steady rate."""
        grid = np.arange(self.days + 1, dtype=np.float64)
        return np.interp(day, grid, self.cumulative)

    def calendar(self, operational: _Floats) -> _Ints:
        """Map seasonal time back to the day of the history it falls on."""
        grid = np.arange(self.days + 1, dtype=np.float64)
        day = np.floor(np.interp(operational, self.cumulative, grid)).astype(np.int64)
        return np.minimum(day, self.days - 1)


@dataclass
class _People:
    """Rows of customers.csv as arrays; ``kind`` 0 is a primary row, 1 web, 2 call centre."""

    person: _Ints
    kind: _Ints
    gender: _Ints  # 0 f, 1 m
    first: _Ints  # index into _FIRST
    last: _Ints  # index into _LAST
    middle: _Ints  # index into _MIDDLE, -1: none
    birth: _Ints  # days since 1970
    has_birth: _Bools
    city: _Ints  # -1: none
    email_style: _Ints
    email_domain: _Ints
    email_case: _Ints  # -1: no email
    phone_style: _Ints  # -1: no phone
    card: _Bools
    telegram: _Bools
    consent_email: _Ints  # index into _DECISIONS
    consent_sms: _Ints
    consent_at: _Ints
    source: _Ints

    def take(self, rows: _Ints) -> _People:
        return _People(**{k: v[rows] for k, v in vars(self).items()})


@dataclass
class _Shard:
    """One shard's simulated rows, in file order, plus the counts truth.json needs."""

    people: _People
    duplicates: _People
    duplicate_shard: _Ints  # the shard after whose primary rows each duplicate is written
    order_time: _Ints
    order_customer: _Ints  # person number, -1 for a guest
    order_card: _Ints  # person number whose card was shown, -1 for none
    order_store: _Ints  # store index, -1 online
    order_number: _Ints  # purchase number within the shard
    order_is_return: _Bools
    line_order: _Ints  # index into the order arrays
    line_product: _Ints
    line_quantity: _Ints
    event_person: _Ints
    event_time: _Ints
    event_type: _Ints
    event_product: _Ints  # the catalogue page visited or the product left in the cart
    event_detail: _Ints  # a random number the other properties are read from
    granted: int
    purchases: int
    guest_orders: int
    revenue: int  # kopecks
    guest_revenue: int


def generate(
    out_dir: Path,
    *,
    customers: int = 20_000,
    years: float = 2.0,
    seed: int = 7,
    end: date = date(2026, 11, 1),
    block: int = 50_000,
) -> Truth:
    """Simulate a retailer's customers, orders and events and write them as files.

    Parameters
    ----------
    out_dir : Path
        Folder for ``products.csv``, ``customers.csv``, ``orders.csv``, ``events.jsonl``
        and ``truth.json``; created if missing, files in it overwritten.
    customers : int
        Number of distinct persons. Duplicate customer rows come on top of these.
    years : float
        Length of the order history, ending at midnight (Moscow time) starting ``end``.
    seed : int
        Seed of every random stream; the same seed and arguments give byte-identical files.
    end : date
        First day after the history.
    block : int
        Persons simulated before their rows are written out. It bounds memory and does
        not change the output, which is drawn in fixed shards of 1,000 persons.

    Returns
    -------
    Truth
        The counts and sums the files must yield, also written to ``truth.json``.

    Raises
    ------
    InvalidInput
        If ``customers`` or ``block`` is below 1, or the history is shorter than a week.
    """
    days = round(years * 365.25)
    if customers < 1 or block < 1:
        raise InvalidInput(f"customers and block must be at least 1, not {customers} and {block}")
    if days < 7:
        raise InvalidInput(f"years must cover at least a week, not {years}")
    world = _make_world(seed, end, days)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "products.csv").open("w", encoding="utf-8", newline="") as stream:
        writer = _writer(stream)
        writer.writerow(_PRODUCT_FIELDS)
        writer.writerows(
            zip(world.sku, world.name, world.category, world.brand, world.price_text, strict=True)
        )

    tally = _Tally()
    # duplicate rows waiting for the shard after which they are written
    pending: dict[int, list[tuple[str, ...]]] = {}
    shards = -(-customers // _SHARD)
    with (
        _Sink(out_dir / "customers.csv") as people_out,
        _Sink(out_dir / "orders.csv") as orders_out,
        _Sink(out_dir / "events.jsonl") as events_out,
    ):
        sinks = (people_out, orders_out, events_out)
        people_out.csv.writerow(_CUSTOMER_FIELDS)
        orders_out.csv.writerow(_ORDER_FIELDS)
        buffered = 0
        for index in range(shards):
            first = index * _SHARD
            shard = _simulate(world, index, first, min(_SHARD, customers - first))
            people_out.csv.writerows(_customer_rows(world, shard.people))
            people_out.csv.writerows(pending.pop(index, []))
            duplicates = _customer_rows(world, shard.duplicates)
            for target, row in zip(shard.duplicate_shard.tolist(), duplicates, strict=True):
                pending.setdefault(target, []).append(row)
            if index == shards - 1:
                for target in sorted(pending):
                    people_out.csv.writerows(pending.pop(target))
            orders_out.text.write(_order_text(world, shard, tally.orders))
            _write_events(world, shard, tally.events, events_out.text)
            tally.add(shard)
            for sink in sinks:
                sink.seal()
            buffered += shard.people.person.size
            if buffered >= block:
                for sink in sinks:
                    sink.flush()
                buffered = 0

    truth = Truth(
        persons=customers,
        customer_rows=customers + tally.duplicate_rows,
        duplicate_rows=tally.duplicate_rows,
        email_marketing_granted=tally.granted,
        products=len(world.sku),
        orders=tally.orders,
        return_orders=tally.return_orders,
        order_lines=tally.order_lines,
        guest_orders=tally.guest_orders,
        revenue=round_money(Decimal(tally.revenue) / 100),
        guest_revenue=round_money(Decimal(tally.guest_revenue) / 100),
        events=tally.events,
    )
    record = {k: str(v) if isinstance(v, Decimal) else v for k, v in asdict(truth).items()}
    (out_dir / "truth.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return truth


@dataclass
class _Tally:
    """Running totals over the shards written so far; money in kopecks."""

    duplicate_rows: int = 0
    granted: int = 0
    orders: int = 0
    return_orders: int = 0
    order_lines: int = 0
    guest_orders: int = 0
    revenue: int = 0
    guest_revenue: int = 0
    events: int = 0

    def add(self, shard: _Shard) -> None:
        self.duplicate_rows += shard.duplicates.person.size
        self.granted += shard.granted
        self.orders += shard.purchases
        self.return_orders += shard.order_time.size - shard.purchases
        self.order_lines += shard.line_order.size
        self.guest_orders += shard.guest_orders
        self.revenue += shard.revenue
        self.guest_revenue += shard.guest_revenue
        self.events += shard.event_time.size


class _Sink:
    """One output file. Each shard's text is encoded once the shard is complete and held
    until the block is written, so a buffered block costs about a byte per character."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("wb")
        self._chunks: list[bytes] = []
        self.text = io.StringIO()
        self.csv = _writer(self.text)

    def __enter__(self) -> _Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.seal()
            self.flush()
        self._file.close()

    def seal(self) -> None:
        self._chunks.append(self.text.getvalue().encode("utf-8"))
        self.text.seek(0)
        self.text.truncate()

    def flush(self) -> None:
        self._file.write(b"".join(self._chunks))
        self._chunks.clear()


def _writer(stream: IO[str]) -> Writer:
    # "\n" rather than the csv module's "\r\n": these are files for Unix tools as much as Excel
    return csv.writer(stream, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)


class _Lines:
    """A write target that keeps each csv row as a string of its own."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, line: str) -> int:
        self.lines.append(line)
        return len(line)


def _csv_lines(rows: Iterable[Sequence[str]]) -> list[str]:
    """Rows formatted by the csv module, without line ends."""
    target = _Lines()
    # the writer hands each row to write() in one piece
    csv.writer(target, lineterminator="", quoting=csv.QUOTE_MINIMAL).writerows(rows)
    return target.lines


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _make_world(seed: int, end: date, days: int) -> _World:
    rng = _rng(seed, 0)
    start_day = (end - _EPOCH).days - days
    calendar = (np.arange(days) + start_day).astype("datetime64[D]")
    months = calendar.astype("datetime64[M]").astype(np.int64) % 12
    weekdays = (calendar.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    day_of_month = (calendar - calendar.astype("datetime64[M]")).astype(np.int64) + 1
    intensity = _MONTH[months] * _WEEKDAY[weekdays]
    intensity[(months == 11) & (day_of_month >= 20)] *= 1.3  # the New Year rush
    intensity /= intensity.mean()
    cumulative = np.concatenate([[0.0], np.cumsum(intensity)])

    sku: list[str] = []
    name: list[str] = []
    brand: list[str] = []
    category: list[str] = []
    price: list[int] = []
    product_category: list[int] = []
    cdf: list[_Floats] = []
    for c, cat in enumerate(_CATEGORIES):
        first = len(sku)
        for item, typical in _ITEMS[cat]:
            brands = rng.choice(len(_BRANDS), size=3 + int(rng.random() < 0.95), replace=False)
            for b in sorted(brands.tolist()):
                roubles = max(1, round(typical * float(rng.lognormal(0.0, 0.25))))
                # shelf prices end in .99 more often than not
                kopecks = roubles * 100 - (1 if rng.random() < 0.7 else 0)
                sku.append(f"P{len(sku) + 1:05d}")
                name.append(f"{_BRANDS[b]} {item}")
                brand.append(_BRANDS[b])
                category.append(cat)
                price.append(kopecks)
                product_category.append(c)
        # a few best sellers per category, then a long tail
        weights = 1.0 / (rng.permutation(len(sku) - first) + 1.0) ** 0.8
        share = np.cumsum(weights) / weights.sum()
        share[-1] = 1.0
        cdf.append(c + share)

    price_text = [_roubles(p) for p in price]
    shares = np.array([c[3] for c in _CITIES], dtype=np.float64)
    stores_per_city = np.array([c[4] for c in _CITIES], dtype=np.int64)
    return _World(
        seed=seed,
        start=start_day * _DAY,
        days=days,
        cumulative=cumulative,
        sku=sku,
        name=name,
        brand=brand,
        category=category,
        price=np.array(price, dtype=np.int64),
        price_text=price_text,
        product_part=_csv_lines(zip(sku, name, category, strict=True)),
        price_part=_csv_lines((p, "RUB") for p in price_text),
        product_category=np.array(product_category, dtype=np.int64),
        product_cdf=np.concatenate(cdf),
        city_share=shares / shares.sum(),
        city_first_store=np.concatenate([[0], np.cumsum(stores_per_city)[:-1]]),
        city_stores=stores_per_city,
        phone_b=int(rng.integers(10**9)),
        card_b=int(rng.integers(10**12)),
        alias_b=int(rng.integers(10**8)),
    )


def _female(surname: str) -> str:
    if surname.endswith("ский"):
        return surname[:-2] + "ая"
    if surname.endswith("sky"):
        return surname[:-1] + "aya"
    return surname + ("а" if surname[-1] in "внй" else "a")


# Name tables hold women first, then men, so that a row keeps one index per column.
_FIRST = [n for n, _ in _FEMALE_NAMES + _MALE_NAMES]
_FIRST_LATIN = [n for _, n in _FEMALE_NAMES + _MALE_NAMES]
_LAST = [_female(n) for n, _ in _SURNAMES] + [n for n, _ in _SURNAMES]
_LAST_LATIN = [_female(n) for _, n in _SURNAMES] + [n for _, n in _SURNAMES]
_MIDDLE = [f for _, f in _PATRONYMICS] + [m for m, _ in _PATRONYMICS] + [""]
# The trailing "" lets index -1 (no value) land on an empty field.
_CITY = [c[0] for c in _CITIES] + [""]
_REGION = [c[1] for c in _CITIES] + [""]
_ZONE = [c[2] for c in _CITIES] + [""]
_EMAIL_CASE_SHARE = np.array([0.55, 0.15, 0.05, 0.10, 0.05, 0.10])
_PHONE_STYLE_SHARE = np.array([0.35, 0.25, 0.20, 0.20])
_PARTNER_INDEX = np.array(
    [_CATEGORIES.index(_PARTNER[c]) if c in _PARTNER else -1 for c in _CATEGORIES], dtype=np.int64
)
_SLUG = [c.replace(" ", "-") for c in _CATEGORIES]


def _zipf(n: int, power: float) -> _Floats:
    """Shares for a table whose first entries are the most common."""
    w = 1.0 / (np.arange(n, dtype=np.float64) + 3.0) ** power
    return w / float(w.sum())


def _time_of_day(rng: np.random.Generator, online: _Bools) -> _Ints:
    """Seconds after midnight: shops trade from 7 to 23, the web peaks late in the evening."""
    u = rng.random(online.size)
    shop = np.cumsum(_HOURS_OFFLINE) / _HOURS_OFFLINE.sum()
    web = np.cumsum(_HOURS_ONLINE) / _HOURS_ONLINE.sum()
    hour = np.where(
        online, np.searchsorted(web, u, side="right"), np.searchsorted(shop, u, side="right")
    )
    return np.minimum(hour, 23).astype(np.int64) * 3600 + rng.integers(0, 3600, online.size)


def _draw_people(rng: np.random.Generator, world: _World, first: int, n: int) -> _People:
    """Primary customer rows; ``consent_at`` holds the moment each person signed up."""
    gender = (rng.random(n) < 0.45).astype(np.int64)
    names = len(_FEMALE_NAMES)
    surnames = len(_SURNAMES)
    source = rng.choice(3, n, p=[0.6, 0.3, 0.1]).astype(np.int64)
    # sign-ups run evenly over the history; the first purchase comes with the sign-up
    day = rng.integers(0, world.days - 1, n)
    # ages 18 to 80, most between 30 and 55
    age_days = (365.25 * (18 + 62 * rng.beta(2.0, 3.0, n))).astype(np.int64)
    return _People(
        person=first + np.arange(n, dtype=np.int64),
        kind=np.zeros(n, dtype=np.int64),
        gender=gender,
        first=rng.choice(names, n, p=_zipf(names, 1.0)) + gender * names,
        last=rng.choice(surnames, n, p=_zipf(surnames, 0.8)) + gender * surnames,
        middle=np.where(
            rng.random(n) < 0.75,
            rng.integers(0, len(_PATRONYMICS), n) + gender * len(_PATRONYMICS),
            -1,
        ),
        birth=world.start // _DAY + world.days - age_days,
        has_birth=rng.random(n) >= 0.10,
        city=rng.choice(len(_CITIES), n, p=world.city_share).astype(np.int64),
        email_style=rng.integers(0, 4, n),
        email_domain=rng.choice(len(_DOMAINS), n, p=_DOMAIN_SHARE / _DOMAIN_SHARE.sum()).astype(
            np.int64
        ),
        email_case=np.where(
            rng.random(n) >= 0.15, rng.choice(_EMAIL_CASE_SHARE.size, n, p=_EMAIL_CASE_SHARE), -1
        ),
        phone_style=np.where(
            rng.random(n) >= 0.10, rng.choice(_PHONE_STYLE_SHARE.size, n, p=_PHONE_STYLE_SHARE), -1
        ),
        card=rng.random(n) < 0.70,
        telegram=rng.random(n) < 0.20,
        consent_email=rng.choice(3, n, p=[0.25, 0.60, 0.15]).astype(np.int64),
        consent_sms=rng.choice(3, n, p=[0.35, 0.50, 0.15]).astype(np.int64),
        consent_at=world.start + day * _DAY + _time_of_day(rng, source == 1),
        source=source,
    )


def _draw_duplicates(
    rng: np.random.Generator, world: _World, people: _People, shard: int
) -> tuple[_People, _Ints]:
    """Second rows for about 4% of persons, and the shard after which each is written.

    A duplicate comes from a web form or a call, later than the primary row. It repeats
    the person's email and/or phone written differently, so it can be matched to exactly
    one person, and may carry a newer consent decision.
    """
    n = people.person.size
    has_email, has_phone = people.email_case >= 0, people.phone_style >= 0
    reachable = has_email | has_phone
    # scale the draw so that about 4% of all persons, not of the reachable ones, get a twin
    chosen = reachable & (rng.random(n) < _DUPLICATE / 0.985)
    twin = people.take(np.flatnonzero(chosen))
    m = twin.person.size
    both = (twin.email_case >= 0) & (twin.phone_style >= 0)
    r = rng.random(m)
    keep_email = (twin.email_case >= 0) & (~both | (r < 0.4) | (r >= 0.7))
    keep_phone = (twin.phone_style >= 0) & (~both | (r >= 0.4))
    cases, styles = _EMAIL_CASE_SHARE.size, _PHONE_STYLE_SHARE.size
    twin.email_case = np.where(
        keep_email, (twin.email_case + 1 + rng.integers(0, cases - 1, m)) % cases, -1
    )
    twin.phone_style = np.where(
        keep_phone, (twin.phone_style + 1 + rng.integers(0, styles - 1, m)) % styles, -1
    )
    twin.kind = 1 + (rng.random(m) < 0.3).astype(np.int64)
    twin.source = twin.kind.copy()
    twin.middle = np.where(rng.random(m) < 0.6, -1, twin.middle)
    twin.has_birth = twin.has_birth & (rng.random(m) >= 0.5)
    twin.city = np.where(rng.random(m) < 0.3, -1, twin.city)
    twin.card = np.zeros(m, dtype=np.bool_)
    twin.telegram = twin.telegram & (rng.random(m) < 0.3)
    # later decisions lean towards opting out, as people who write in often do
    twin.consent_email = rng.choice(3, m, p=[0.40, 0.25, 0.35]).astype(np.int64)
    twin.consent_sms = rng.choice(3, m, p=[0.60, 0.20, 0.20]).astype(np.int64)
    after = world.end - twin.consent_at - 1
    twin.consent_at = twin.consent_at + 1 + (rng.random(m) * after).astype(np.int64)
    return twin, shard + rng.integers(1, 4, m)


def _favourites(rng: np.random.Generator, n: int) -> _Ints:
    """Three categories per shopper in order of preference (Gumbel top-k: no repeats)."""
    keys = np.log(_POPULARITY) - np.log(-np.log(rng.random((n, len(_CATEGORIES)))))
    return np.argsort(-keys, axis=1)[:, :3].astype(np.int64)


@dataclass
class _Purchases:
    """Purchase orders before their baskets are drawn; person numbers are shard-local."""

    time: _Ints
    owner: _Ints  # shopper, shard-local; -1 for an anonymous guest
    identified: _Bools  # False for guest orders (no customer_id)
    card: _Bools  # the owner's card was shown
    store: _Ints  # -1 online
    spend: _Floats
    favourites: _Ints  # (orders, 3)
    favourite_count: _Ints
    habitual: _Bools  # False: an anonymous guest, who buys by overall popularity

    def take(self, rows: _Ints) -> _Purchases:
        return _Purchases(**{k: v[rows] for k, v in vars(self).items()})


def _draw_purchases(
    rng: np.random.Generator,
    world: _World,
    people: _People,
    favourites: _Ints,
    favourite_count: _Ints,
) -> _Purchases:
    """Identified and guest purchase orders of one shard, sorted by time."""
    n = people.person.size
    # Buy till you die: while alive, purchases arrive as a Poisson process at `rate` per
    # day of seasonal time; after each one the shopper leaves with probability `dropout`.
    rate = rng.gamma(_RATE_SHAPE, _RATE_SCALE, n)
    dropout = rng.beta(_DROPOUT_A, _DROPOUT_B, n)
    spend = rng.gamma(_SPEND_SHAPE, 1.0 / _SPEND_SHAPE, n)
    buyer = rng.random(n) >= _PROSPECT
    online_share = np.where(rng.random(n) < 0.25, 0.6, 0.07)
    stores = int(world.city_stores.sum())
    home = world.city_first_store[people.city] + (
        rng.random(n) * world.city_stores[people.city]
    ).astype(np.int64)

    joined = people.consent_at - world.start
    begin = world.operational(joined / _DAY)
    expected = rate * (world.horizon - begin)
    # a Poisson count beyond mean + 6 sd does not happen in practice, so it bounds the draws
    cap = np.ceil(expected + 6 * np.sqrt(expected) + 10).astype(np.int64)
    count = np.where(buyer, np.minimum(rng.geometric(dropout), cap), 0)
    owner = np.repeat(np.arange(n, dtype=np.int64), count)
    head = np.repeat(np.cumsum(count) - count, count)
    opening = head == np.arange(owner.size)
    gaps = rng.standard_exponential(owner.size) / rate[owner]
    gaps[opening] = 0.0  # the first purchase is the sign-up
    total = np.cumsum(gaps)
    moment = begin[owner] + total - total[head]
    kept = moment < world.horizon
    owner, moment, opening = owner[kept], moment[kept], opening[kept]
    # whoever signed up at a till or on the web shop made their first purchase right there
    at_sign_up = opening & (people.source[owner] < 2)
    online = np.where(
        at_sign_up, people.source[owner] == 1, rng.random(owner.size) < online_share[owner]
    )
    time = world.start + world.calendar(moment) * _DAY + _time_of_day(rng, online)
    signed_up = people.consent_at[owner]
    time = np.where(at_sign_up, signed_up, np.maximum(time, signed_up))
    store = np.where(
        online,
        -1,
        np.where(rng.random(owner.size) < 0.85, home[owner], rng.integers(0, stores, owner.size)),
    )

    # Guests: anonymous shoppers, and card holders whose card was read but not linked yet;
    # the latter shop near one of their own purchases, so churners stay churned.
    guests = int(rng.poisson(_GUEST * owner.size))
    holders = np.flatnonzero(people.card[owner])
    pick = rng.integers(0, max(holders.size, 1), guests)
    carded = (rng.random(guests) < 0.5) & (holders.size > 0)
    near = holders[pick] if holders.size else np.zeros(guests, dtype=np.int64)
    guest_owner = np.where(carded, owner[near], -1)
    near_day = (time[near] - world.start) // _DAY
    guest_day = np.where(
        carded,
        np.minimum(near_day + rng.integers(0, 15, guests), world.days - 1),
        world.calendar(rng.random(guests) * world.horizon),
    )
    guest_online = rng.random(guests) < 0.03
    guest_time = world.start + guest_day * _DAY + _time_of_day(rng, guest_online)
    guest_store = np.where(
        guest_online,
        -1,
        np.where(
            carded & (rng.random(guests) < 0.85),
            home[np.maximum(guest_owner, 0)],
            rng.integers(0, stores, guests),
        ),
    )
    guest_spend = np.where(
        carded, spend[owner[near]], rng.gamma(_SPEND_SHAPE, 1 / _SPEND_SHAPE, guests)
    )

    everyone = np.concatenate([owner, guest_owner])
    lookup = np.maximum(everyone, 0)
    purchases = _Purchases(
        time=np.concatenate([time, guest_time]),
        owner=everyone,
        identified=np.arange(everyone.size) < owner.size,
        card=np.concatenate([~online & people.card[owner], carded]),
        store=np.concatenate([store, guest_store]),
        spend=np.concatenate([spend[owner], guest_spend]),
        favourites=favourites[lookup],
        favourite_count=favourite_count[lookup],
        habitual=everyone >= 0,
    )
    return purchases.take(np.argsort(purchases.time, kind="stable"))


def _draw_baskets(
    rng: np.random.Generator, world: _World, purchases: _Purchases
) -> tuple[_Ints, _Ints, _Ints]:
    """Order lines (purchase index, product, quantity), one line per product per order."""
    spend = purchases.spend
    sizes = 1 + rng.poisson(_LINES_MEAN * np.sqrt(spend))
    order = np.repeat(np.arange(spend.size, dtype=np.int64), sizes)
    lines = order.size
    r = rng.random(lines)
    slot = np.where(
        purchases.favourite_count[order] == 3,
        (r > 0.55).astype(np.int64) + (r > 0.85),
        (r > 0.6).astype(np.int64),
    )
    category = purchases.favourites[order, slot]
    anywhere = ~purchases.habitual[order] | (rng.random(lines) >= _FAVOURITE)
    popular = rng.choice(len(_CATEGORIES), lines, p=_POPULARITY / _POPULARITY.sum())
    category = np.where(anywhere, popular, category)
    # a line from a paired category pulls its partner into the same basket
    previous = np.concatenate([[0], category[:-1]])
    opening = np.concatenate([[True], order[1:] != order[:-1]])
    partner = _PARTNER_INDEX[previous]
    follow = ~opening & (partner >= 0) & (rng.random(lines) < _PAIR)
    category = np.where(follow, partner, category)
    product = np.searchsorted(world.product_cdf, category + rng.random(lines), side="right")
    # several loaves, one kettle
    mean = _QUANTITY_MEAN * spend[order] * np.clip(30_000 / world.price[product], 0.1, 1.5)
    quantity = 1 + rng.poisson(mean)

    key = order * len(world.sku) + product
    sort = np.argsort(key, kind="stable")
    key, quantity = key[sort], quantity[sort]
    heads = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    key = key[heads]
    summed = np.add.reduceat(quantity, heads) if heads.size else quantity[:0]
    return key // len(world.sku), key % len(world.sku), summed.astype(np.int64)


def _simulate(world: _World, shard: int, first: int, n: int) -> _Shard:
    """Simulate persons ``first`` to ``first + n - 1``: rows, orders, returns and events."""
    rng = _rng(world.seed, 1, shard)
    people = _draw_people(rng, world, first, n)
    duplicates, duplicate_shard = _draw_duplicates(rng, world, people, shard)
    latest = people.consent_email.copy()
    decided = duplicates.consent_email > 0
    # a duplicate's consent is always the later one, so it decides wherever it decides
    latest[duplicates.person[decided] - first] = duplicates.consent_email[decided]
    favourites = _favourites(rng, n)
    favourite_count = 2 + (rng.random(n) < 0.5).astype(np.int64)

    purchases = _draw_purchases(rng, world, people, favourites, favourite_count)
    order, product, quantity = _draw_baskets(rng, world, purchases)
    bought = purchases.time.size

    # Returns: a few days later at the same store, the whole basket or part of it.
    returned = np.flatnonzero(rng.random(bought) < _RETURN)
    back_day = (purchases.time[returned] - world.start) // _DAY + rng.integers(1, 11, returned.size)
    back_time = world.start + back_day * _DAY + _time_of_day(rng, purchases.store[returned] < 0)
    in_window = back_day < world.days
    returned, back_time = returned[in_window], back_time[in_window]
    full = np.append(rng.random(returned.size) < _FULL_RETURN, False)  # [-1]: not returned
    which = np.full(bought, -1, dtype=np.int64)
    which[returned] = np.arange(returned.size)
    line_return = which[order]
    first_line = np.searchsorted(order, returned)
    sizes = np.bincount(order, minlength=bought)[returned]
    chosen = np.zeros(order.size, dtype=np.bool_)
    chosen[first_line + (rng.random(returned.size) * sizes).astype(np.int64)] = True
    u = rng.random(order.size)
    back = (line_return >= 0) & (full[line_return] | (u < 0.5) | chosen)
    back_quantity = np.where(
        full[line_return], quantity, 1 + (rng.random(order.size) * quantity).astype(np.int64)
    )[back]

    customer = np.where(purchases.identified, first + purchases.owner, -1)
    card = np.where(purchases.card, first + purchases.owner, -1)
    order_time = np.concatenate([purchases.time, back_time])
    file = np.argsort(order_time, kind="stable")
    position = np.empty_like(file)
    position[file] = np.arange(file.size)
    line_order = position[np.concatenate([order, bought + line_return[back]])]
    line_product = np.concatenate([product, product[back]])
    line_quantity = np.concatenate([quantity, -back_quantity])
    sort = np.argsort(line_order * len(world.sku) + line_product, kind="stable")
    line_order, line_product, line_quantity = (
        line_order[sort],
        line_product[sort],
        line_quantity[sort],
    )
    order_customer = np.concatenate([customer, customer[returned]])[file]
    amount = line_quantity * world.price[line_product]

    events = _draw_events(rng, world, people, favourites)
    return _Shard(
        people=people,
        duplicates=duplicates,
        duplicate_shard=duplicate_shard,
        order_time=order_time[file],
        order_customer=order_customer,
        order_card=np.concatenate([card, card[returned]])[file],
        order_store=np.concatenate([purchases.store, purchases.store[returned]])[file],
        order_number=np.concatenate([np.arange(bought), returned])[file],
        order_is_return=file >= bought,
        line_order=line_order,
        line_product=line_product,
        line_quantity=line_quantity,
        event_person=first + events[0],
        event_time=events[1],
        event_type=events[2],
        event_product=events[3],
        event_detail=events[4],
        granted=int(np.count_nonzero(latest == 1)),
        purchases=bought,
        guest_orders=int(np.count_nonzero(~purchases.identified)),
        revenue=int(amount.sum()),
        guest_revenue=int(amount[order_customer[line_order] < 0].sum()),
    )


def _draw_events(
    rng: np.random.Generator, world: _World, people: _People, favourites: _Ints
) -> tuple[_Ints, _Ints, _Ints, _Ints, _Ints]:
    """Site visits, forms, calls and abandoned carts, from a month before sign-up onwards.

    Returns shard-local person, time, type, product (page or cart) and a random number that
    the properties are read from, sorted by time.
    """
    n = people.person.size
    count = rng.poisson(_EVENTS_MEAN * rng.gamma(2.0, 0.5, n))
    who = np.repeat(np.arange(n, dtype=np.int64), count)
    joined = (people.consent_at[who] - world.start) // _DAY
    since = np.maximum(joined - 30, 0)
    day = since + (rng.random(who.size) * (world.days - since)).astype(np.int64)
    kind = rng.choice(len(_EVENT_TYPES), who.size, p=_EVENT_SHARE).astype(np.int64)
    time = world.start + day * _DAY + _time_of_day(rng, kind != _EVENT_TYPES.index("call"))
    category = favourites[who, rng.integers(0, 2, who.size)]
    product = np.searchsorted(world.product_cdf, category + rng.random(who.size), side="right")
    detail = rng.integers(0, 1 << 20, who.size)
    sort = np.argsort(time, kind="stable")
    return who[sort], time[sort], kind[sort], product[sort], detail[sort]


def _timestamps(seconds: _Ints) -> list[str]:
    text = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s")
    return [f"{t}{_OFFSET}" for t in text.tolist()]


def _cards(world: _World, persons: _Ints) -> list[str]:
    """13-digit card numbers (in-store EAN prefix 2), one per person, never shared."""
    numbers = 2 * 10**12 + (persons * _CARD_A + world.card_b) % 10**12
    return [str(x) for x in numbers.tolist()]


def _customer_id(person: int) -> str:
    return f"C{person + 1:07d}"


def _roubles(kopecks: int) -> str:
    return f"{kopecks // 100}.{kopecks % 100:02d}"


def _customer_rows(world: _World, rows: _People) -> list[tuple[str, ...]]:
    """customers.csv rows, with emails and phones written the way each row's source does."""
    persons = rows.person.tolist()
    alias = ((rows.person * _ALIAS_A + world.alias_b) % 10**8).tolist()
    ids = [
        _customer_id(g) if k == 0 else f"{'WK'[k - 1]}{a:08d}"
        for g, k, a in zip(persons, rows.kind.tolist(), alias, strict=True)
    ]
    first = rows.first.tolist()
    last = rows.last.tolist()
    emails = [
        _email(_FIRST_LATIN[f], _LAST_LATIN[s], g + 1, style=style, domain=_DOMAINS[d], case=case)
        for f, s, g, style, d, case in zip(
            first,
            last,
            persons,
            rows.email_style.tolist(),
            rows.email_domain.tolist(),
            rows.email_case.tolist(),
            strict=True,
        )
    ]
    numbers = (9 * 10**9 + (rows.person * _PHONE_A + world.phone_b) % 10**9).tolist()
    phones = [_phone(x, s) for x, s in zip(numbers, rows.phone_style.tolist(), strict=True)]
    cards = _cards(world, rows.person)
    births = np.datetime_as_string(rows.birth.astype("datetime64[D]")).tolist()
    decided = ((rows.consent_email > 0) | (rows.consent_sms > 0)).tolist()
    city = rows.city.tolist()
    return list(
        zip(
            ids,
            [_FIRST[i] for i in first],
            [_LAST[i] for i in last],
            [_MIDDLE[i] for i in rows.middle.tolist()],
            [b if h else "" for b, h in zip(births, rows.has_birth.tolist(), strict=True)],
            ["fm"[x] for x in rows.gender.tolist()],
            [_CITY[c] for c in city],
            [_REGION[c] for c in city],
            [_ZONE[c] for c in city],
            ["ru"] * len(ids),
            emails,
            phones,
            [c if has else "" for c, has in zip(cards, rows.card.tolist(), strict=True)],
            [
                f"@{_FIRST_LATIN[f]}_{_LAST_LATIN[s][:4]}{g + 1}" if has else ""
                for f, s, g, has in zip(first, last, persons, rows.telegram.tolist(), strict=True)
            ],
            [_DECISIONS[x] for x in rows.consent_email.tolist()],
            [_DECISIONS[x] for x in rows.consent_sms.tolist()],
            [t if d else "" for t, d in zip(_timestamps(rows.consent_at), decided, strict=True)],
            [_SOURCES[x] if d else "" for x, d in zip(rows.source.tolist(), decided, strict=True)],
            strict=True,
        )
    )


def _email(first: str, last: str, number: int, *, style: int, domain: str, case: int) -> str:
    """The person's address (unique: it ends in the person number) as this row writes it."""
    if case < 0:
        return ""
    local = (
        f"{first}.{last}{number}",
        f"{first}{number}",
        f"{first[0]}.{last}{number}",
        f"{last}_{first}{number}",
    )[style]
    address = f"{local}@{domain}"
    return (
        address,
        address.title(),
        address.upper(),
        f" {address} ",
        f"{address.title()} ",
        f"  {address}",
    )[case]


def _phone(number: int, style: int) -> str:
    """A Russian mobile number written one of the four common ways, or "" for none."""
    if style < 0:
        return ""
    d = str(number)
    return (
        f"+7 {d[:3]} {d[3:6]}-{d[6:8]}-{d[8:]}",
        f"8 ({d[:3]}) {d[3:6]}-{d[6:8]}-{d[8:]}",
        f"8{d}",
        f"+7{d}",
    )[style]


def _order_text(world: _World, shard: _Shard, base: int) -> str:
    """orders.csv lines; purchases are numbered from ``base + 1`` in the order they appear.

    A line is the csv-formatted order fields, product fields, quantity and price fields
    joined by commas: each part comes from the csv module, so quoting stays standard, and
    the order and product parts are formatted once rather than once per line.
    """
    numbers = (shard.order_number + base + 1).tolist()
    ids = [
        f"CS{x:08d}" if r else f"S{x:08d}"
        for x, r in zip(numbers, shard.order_is_return.tolist(), strict=True)
    ]
    customers = [_customer_id(g) if g >= 0 else "" for g in shard.order_customer.tolist()]
    cards = [
        c if g >= 0 else ""
        for c, g in zip(
            _cards(world, np.maximum(shard.order_card, 0)), shard.order_card.tolist(), strict=True
        )
    ]
    times = _timestamps(shard.order_time)
    stores = [f"Store {s + 1:02d}" if s >= 0 else "online" for s in shard.order_store.tolist()]
    channels = ["offline" if s >= 0 else "online" for s in shard.order_store.tolist()]
    heads = _csv_lines(zip(ids, customers, cards, times, stores, channels, strict=True))
    goods, prices = world.product_part, world.price_part
    return "".join(
        [
            f"{heads[o]},{goods[p]},{q},{prices[p]}\n"
            for o, p, q in zip(
                shard.line_order.tolist(),
                shard.line_product.tolist(),
                shard.line_quantity.tolist(),
                strict=True,
            )
        ]
    )


def _write_events(world: _World, shard: _Shard, base: int, out: IO[str]) -> None:
    """events.jsonl lines, numbered from ``base + 1``."""
    ids = [_customer_id(g) for g in shard.event_person.tolist()]
    times = _timestamps(shard.event_time)
    for k, (who, at, kind, product, detail) in enumerate(
        zip(
            ids,
            times,
            shard.event_type.tolist(),
            shard.event_product.tolist(),
            shard.event_detail.tolist(),
            strict=True,
        )
    ):
        name = _EVENT_TYPES[kind]
        properties: dict[str, Any]
        if name == "site_visit":
            page = _SLUG[int(world.product_category[product])]
            properties = {
                "page": f"/catalog/{page}",
                "device": _DEVICES[detail % 2],
                "duration_s": 5 + (detail >> 1) % 600,
            }
        elif name == "form_submitted":
            properties = {"form": _FORMS[detail % len(_FORMS)]}
        elif name == "call":
            properties = {
                "reason": _CALL_REASONS[detail % len(_CALL_REASONS)],
                "duration_s": 20 + (detail >> 2) % 900,
            }
        else:
            items = 1 + detail % 4
            value = items * int(world.price[product])
            properties = {
                "sku": world.sku[product],
                "items": items,
                "value": _roubles(value),
            }
        record = {
            "event_id": f"E{base + k + 1:09d}",
            "customer_id": who,
            "type": name,
            "occurred_at": at,
            "properties": properties,
        }
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
