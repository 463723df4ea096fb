"""The simulated world: cities, merchant categories, merchants and customers with their habits.

Static tables are small and hand-picked to look like a card issuer's book: most customers in
North America and Europe, everyday spend dominated by groceries, restaurants and fuel, and a
thin tail of high-risk categories. Everything random is drawn from one seeded numpy Generator,
so the same seed gives the same world.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.core.currency import UNITS_PER_USD

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class City:
    name: str
    country: str
    currency: str
    lat: float
    lon: float
    utc_offset_h: float
    weight: float  # share of customers living there

    @property
    def fx_per_usd(self) -> float:
        """Local currency units per US dollar, from the shared reference table."""
        return UNITS_PER_USD[self.currency]


CITIES: tuple[City, ...] = (
    City("New York", "US", "USD", 40.71, -74.01, -5, 9),
    City("Los Angeles", "US", "USD", 34.05, -118.24, -8, 7),
    City("Chicago", "US", "USD", 41.88, -87.63, -6, 5),
    City("Houston", "US", "USD", 29.76, -95.37, -6, 4),
    City("Miami", "US", "USD", 25.76, -80.19, -5, 3),
    City("Seattle", "US", "USD", 47.61, -122.33, -8, 3),
    City("Toronto", "CA", "CAD", 43.65, -79.38, -5, 4),
    City("Mexico City", "MX", "MXN", 19.43, -99.13, -6, 3),
    City("Sao Paulo", "BR", "BRL", -23.55, -46.63, -3, 3),
    City("Buenos Aires", "AR", "ARS", -34.60, -58.38, -3, 1),
    City("London", "GB", "GBP", 51.51, -0.13, 0, 7),
    City("Manchester", "GB", "GBP", 53.48, -2.24, 0, 2),
    City("Paris", "FR", "EUR", 48.86, 2.35, 1, 5),
    City("Berlin", "DE", "EUR", 52.52, 13.40, 1, 5),
    City("Madrid", "ES", "EUR", 40.42, -3.70, 1, 3),
    City("Rome", "IT", "EUR", 41.90, 12.50, 1, 3),
    City("Amsterdam", "NL", "EUR", 52.37, 4.90, 1, 2),
    City("Stockholm", "SE", "SEK", 59.33, 18.07, 1, 1),
    City("Warsaw", "PL", "PLN", 52.23, 21.01, 1, 2),
    City("Bucharest", "RO", "RON", 44.43, 26.10, 2, 1),
    City("Moscow", "RU", "RUB", 55.76, 37.62, 3, 1),
    City("Lagos", "NG", "NGN", 6.52, 3.38, 1, 1),
    City("Johannesburg", "ZA", "ZAR", -26.20, 28.05, 2, 1),
    City("Dubai", "AE", "AED", 25.20, 55.27, 4, 1),
    City("Mumbai", "IN", "INR", 19.08, 72.88, 5.5, 2),
    City("Singapore", "SG", "SGD", 1.35, 103.82, 8, 1),
    City("Jakarta", "ID", "IDR", -6.20, 106.85, 7, 1),
    City("Manila", "PH", "PHP", 14.60, 120.98, 8, 1),
    City("Tokyo", "JP", "JPY", 35.68, 139.69, 9, 3),
    City("Sydney", "AU", "AUD", -33.87, 151.21, 10, 2),
)


@dataclass(frozen=True)
class Category:
    mcc: str
    name: str
    median_usd: float
    sigma: float  # of log(amount)
    weight: float  # share of everyday spend events
    kind: str  # "physical" (card present), "online" (ecommerce) or "atm"


CATEGORIES: tuple[Category, ...] = (
    Category("5411", "grocery", 45, 0.6, 20, "physical"),
    Category("5812", "restaurants", 35, 0.6, 14, "physical"),
    Category("5814", "fast food", 12, 0.5, 12, "physical"),
    Category("5541", "fuel", 40, 0.4, 10, "physical"),
    Category("5912", "pharmacy", 25, 0.7, 5, "physical"),
    Category("5311", "department store", 70, 0.8, 5, "physical"),
    Category("5651", "clothing", 60, 0.7, 4, "online"),
    Category("5732", "electronics", 150, 1.0, 3, "online"),
    Category("5944", "jewelry", 250, 1.0, 0.5, "physical"),
    Category("4121", "taxi and rideshare", 20, 0.6, 6, "online"),
    Category("5815", "digital media", 10, 0.8, 5, "online"),
    Category("5816", "digital games", 15, 0.9, 2, "online"),
    Category("5999", "misc retail", 30, 0.9, 3, "online"),
    Category("4511", "airlines", 350, 0.7, 1.5, "online"),
    Category("7011", "hotels", 180, 0.6, 1.5, "online"),
    Category("6011", "atm cash", 100, 0.6, 4, "atm"),
    Category("4829", "money transfer", 200, 1.0, 0.5, "online"),
    Category("7995", "gambling", 80, 1.2, 0.5, "online"),
    Category("6051", "quasi cash and crypto", 150, 1.1, 0.3, "online"),
)

MCC_INDEX = {c.mcc: i for i, c in enumerate(CATEGORIES)}
HIGH_RISK_MCCS = ("7995", "4829", "6051", "5944")
DIGITAL_MCCS = ("5815", "5816", "5999")
HIGH_VALUE_MCCS = ("5732", "5944", "5311")

# Relative activity by local hour: quiet nights, a lunch bump, busy evenings.
DIURNAL = np.array(
    [0.15, 0.08, 0.05, 0.04, 0.05, 0.1, 0.3, 0.6, 0.8, 0.9, 1.0, 1.1,
     1.3, 1.2, 1.0, 1.0, 1.1, 1.3, 1.5, 1.4, 1.2, 0.9, 0.6, 0.3]
)  # fmt: skip
DIURNAL_MAX = float(DIURNAL.max())
REGULAR_MERCHANTS = 6
DAILY_MEDIAN, DAILY_SIGMA = 2.0, 0.7  # a customer's transactions per day: lognormal
MEAN_DAILY = DAILY_MEDIAN * math.exp(DAILY_SIGMA**2 / 2)  # about 2.55


def scramble(index: int, salt: int) -> int:
    """A bijection on 32-bit ints, so sequential indices give random-looking unique ids."""
    return ((index * 2_654_435_761) ^ salt) & 0xFFFFFFFF


@dataclass(frozen=True)
class CityPools:
    """Per-city merchant lists concatenated, so a chunk of picks is one vectorised lookup."""

    members: IntArray
    start: IntArray
    size: IntArray

    @classmethod
    def of(cls, pools: list[IntArray]) -> CityPools:
        sizes = np.array([p.size for p in pools], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        return cls(np.concatenate(pools).astype(np.int64), starts, sizes)

    def pick(self, city: IntArray, u: FloatArray) -> IntArray:
        """One merchant per (city, uniform draw)."""
        picked: IntArray = self.members[self.start[city] + (u * self.size[city]).astype(np.int64)]
        return picked


@dataclass(frozen=True)
class Merchants:
    """Merchants as columns; physical and ATM merchants sit in a city, online ones anywhere."""

    category: IntArray
    city: IntArray
    lat: FloatArray
    lon: FloatArray
    ids: list[str]
    by_city_physical: list[IntArray]  # physical (card present) merchants per city
    by_city_atm: list[IntArray]
    physical_flat: CityPools
    atm_flat: CityPools
    online: IntArray
    online_weights: FloatArray  # cumulative popularity, for searchsorted
    risky_online: IntArray  # online gambling, money transfer and crypto merchants
    by_mcc: dict[str, IntArray]


@dataclass(frozen=True)
class Customers:
    """Customers as columns: home, habits, devices and their regular merchants."""

    city: IntArray
    lat: FloatArray
    lon: FloatArray
    activity_cum: FloatArray  # cumulative activity weights, for searchsorted
    daily_rate: float  # expected transactions per day over all customers
    amount_shift: FloatArray  # log-scale shift of this customer's spend
    online_share: FloatArray
    atm_share: FloatArray
    hour_shift: IntArray  # early bird (-) or night owl (+), hours
    regulars: IntArray  # (customers, REGULAR_MERCHANTS) merchant indices
    second_card: npt.NDArray[np.bool_]
    risky: npt.NDArray[np.bool_]  # really gambles, wires money or buys crypto, often at night
    salt: int
    cards: tuple[list[str], list[str]]  # first and second card token per customer
    ids: list[str]
    devices: tuple[list[str], list[str]]
    ips: list[str]


@dataclass(frozen=True)
class World:
    merchants: Merchants
    customers: Customers


def _cities_arrays() -> tuple[FloatArray, FloatArray, FloatArray]:
    lat = np.array([c.lat for c in CITIES])
    lon = np.array([c.lon for c in CITIES])
    weight = np.array([c.weight for c in CITIES], dtype=np.float64)
    return lat, lon, weight / weight.sum()


def _draw_categories(rng: np.random.Generator, kind: str, size: int) -> IntArray:
    members = np.array([i for i, c in enumerate(CATEGORIES) if c.kind == kind])
    weights = np.array([CATEGORIES[i].weight for i in members])
    drawn: IntArray = members[rng.choice(members.size, size=size, p=weights / weights.sum())]
    return drawn


def _build_merchants(rng: np.random.Generator, count: int) -> Merchants:
    """A third of merchants online; the rest spread over cities by population, each city with
    at least some shops and ATMs so every customer has somewhere to spend."""
    city_lat, city_lon, city_w = _cities_arrays()
    per_city = np.maximum(np.round(city_w * count * 2 / 3).astype(np.int64), 12)
    atms = np.maximum(per_city // 20, 2)
    category_parts: list[IntArray] = []
    city_parts: list[IntArray] = []
    for c in range(len(CITIES)):
        shops = _draw_categories(rng, "physical", int(per_city[c] - atms[c]))
        category_parts += [shops, np.full(int(atms[c]), MCC_INDEX["6011"])]
        city_parts.append(np.full(int(per_city[c]), c))
    n_online = max(count - int(per_city.sum()), count // 3)
    category_parts.append(_draw_categories(rng, "online", n_online))
    city_parts.append(rng.choice(len(CITIES), size=n_online, p=city_w))
    category, city = np.concatenate(category_parts), np.concatenate(city_parts)
    total = category.size
    lat = city_lat[city] + rng.normal(0, 0.05, total)
    lon = city_lon[city] + rng.normal(0, 0.05, total)
    kinds = np.array([CATEGORIES[i].kind for i in category])
    physical = [np.flatnonzero((city == c) & (kinds == "physical")) for c in range(len(CITIES))]
    atm = [np.flatnonzero((city == c) & (kinds == "atm")) for c in range(len(CITIES))]
    online = np.flatnonzero(kinds == "online")
    popularity = rng.pareto(1.5, online.size) + 1.0  # a few big online merchants
    return Merchants(
        category=category,
        city=city,
        lat=lat,
        lon=lon,
        ids=[f"m_{scramble(i, 0x5EED):08x}" for i in range(total)],
        by_city_physical=physical,
        by_city_atm=atm,
        physical_flat=CityPools.of(physical),
        atm_flat=CityPools.of(atm),
        online=online,
        online_weights=np.cumsum(popularity) / popularity.sum(),
        risky_online=online[
            np.isin(category[online], [MCC_INDEX[m] for m in ("7995", "4829", "6051")])
        ],
        by_mcc={c.mcc: np.flatnonzero(category == i) for i, c in enumerate(CATEGORIES)},
    )


def _build_customers(rng: np.random.Generator, count: int, merchants: Merchants) -> Customers:
    city_lat, city_lon, city_w = _cities_arrays()
    city = rng.choice(len(CITIES), size=count, p=city_w)
    daily = rng.lognormal(np.log(DAILY_MEDIAN), DAILY_SIGMA, count)  # heavy-tailed
    salt, ids = int(rng.integers(0, 2**31)), range(count)
    regulars = np.empty((count, REGULAR_MERCHANTS), dtype=np.int64)
    for c in range(len(CITIES)):
        members = np.flatnonzero(city == c)
        pool = merchants.by_city_physical[c]
        regulars[members] = pool[rng.integers(0, pool.size, (members.size, REGULAR_MERCHANTS))]
    return Customers(
        city=city,
        lat=city_lat[city] + rng.normal(0, 0.08, count),
        lon=city_lon[city] + rng.normal(0, 0.08, count),
        activity_cum=np.cumsum(daily) / daily.sum(),
        daily_rate=float(daily.sum()),
        amount_shift=rng.normal(0, 0.4, count),
        online_share=rng.beta(2, 5, count),
        atm_share=rng.beta(1, 20, count),
        hour_shift=rng.integers(-2, 3, count),
        regulars=regulars,
        second_card=rng.random(count) < 0.25,
        risky=rng.random(count) < 0.03,
        salt=salt,
        cards=([card_id(i, False, salt) for i in ids], [card_id(i, True, salt) for i in ids]),
        ids=[customer_id(i, salt) for i in ids],
        devices=([device_id(i, salt) for i in ids], [device_id(i, salt, True) for i in ids]),
        ips=[home_ip(i, salt) for i in ids],
    )


def build_world(rng: np.random.Generator, customers: int, merchants: int) -> World:
    """A population of merchants and customers; deterministic for a given generator state."""
    built = _build_merchants(rng, merchants)
    return World(merchants=built, customers=_build_customers(rng, customers, built))


def card_id(customer: int, second: bool, salt: int) -> str:
    """The card token of a customer's first or second card."""
    return f"card_{scramble(customer, salt):08x}{'b' if second else 'a'}"


def customer_id(customer: int, salt: int) -> str:
    return f"cust_{scramble(customer, salt ^ 0xC0FFEE):08x}"


def device_id(customer: int, salt: int, second: bool = False) -> str:
    return f"dev_{scramble(customer, salt ^ 0xDE71CE):08x}{'2' if second else '1'}"


def home_ip(customer: int, salt: int) -> str:
    """A stable residential-looking IPv4 address per customer."""
    n = scramble(customer, salt ^ 0x1B)
    return f"{64 + n % 128}.{(n >> 8) & 255}.{(n >> 16) & 255}.{1 + (n >> 24) % 254}"
