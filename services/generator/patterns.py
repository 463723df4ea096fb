"""Fraud patterns: each turns one victim and a start time into a labelled burst of events.

The shapes follow what issuers report: card testing (many tiny e-commerce charges from a new
device), account takeover (new device and IP far from home, then large purchases), velocity
bursts (a cloned card used fast), impossible travel (card present far away soon after a home
purchase), and high-risk categories in the victim's local night.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from models.features.definitions import haversine_km
from services.core.contract import Transaction
from services.generator import world as w

MINUTE_MS = 60_000
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Victim:
    """Whose card is abused, and the context a pattern needs to look plausible."""

    customer: int
    second_card: bool
    start_ms: int
    typical_usd: float  # the victim's usual spend per transaction


EmitFn = Callable[[random.Random, w.World, Victim, Callable[[], str]], list[Transaction]]


@dataclass(frozen=True)
class Pattern:
    name: str
    share: float  # target share of fraud *events* (not episodes)
    mean_events: float  # expected events per episode, to turn shares into episode odds
    emit: EmitFn


def _far_city(rng: random.Random, home_city: int, min_km: float = 3000.0) -> int:
    home = w.CITIES[home_city]
    far = [
        i
        for i, c in enumerate(w.CITIES)
        if haversine_km(home.lat, home.lon, c.lat, c.lon) >= min_km
    ]
    return rng.choice(far)


def fraud_ip(rng: random.Random) -> str:
    return (
        f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    )


def pick(rng: random.Random, pool: w.IntArray) -> int:
    return int(pool[rng.randrange(pool.size)])


def fraud_tx(
    new_id: Callable[[], str],
    world: w.World,
    victim: Victim,
    time_ms: int,
    merchant: int,
    amount_usd: float,
    *,
    channel: str,
    city: int,
    device: str | None,
    ip: str | None,
    lat: float,
    lon: float,
) -> Transaction:
    """A fraudulent transaction, priced in the merchant's (or, online, the card's) currency."""
    customers, merchants = world.customers, world.merchants
    priced_in = (
        w.CITIES[city] if channel != "ecommerce" else w.CITIES[customers.city[victim.customer]]
    )
    return Transaction(
        transaction_id=new_id(),
        event_time=time_ms,
        card_id=w.card_id(victim.customer, victim.second_card, customers.salt),
        customer_id=w.customer_id(victim.customer, customers.salt),
        merchant_id=merchants.ids[merchant],
        merchant_category=w.CATEGORIES[merchants.category[merchant]].mcc,
        amount=round(max(amount_usd * priced_in.fx_per_usd, 0.01), 2),
        currency=priced_in.currency,
        country=w.CITIES[city].country,
        channel=channel,  # type: ignore[arg-type]
        device_id=device,
        ip=ip,
        lat=round(lat, 5),
        lon=round(lon, 5),
    )


@dataclass(frozen=True)
class Remote:
    """A fraudster's online identity: where the IP geolocates, a device and IP never seen."""

    city: int
    device: str
    ip: str


def remote_identity(rng: random.Random, world: w.World, victim: Victim) -> Remote:
    city = _far_city(rng, int(world.customers.city[victim.customer]))
    return Remote(city, f"dev_x{rng.getrandbits(40):010x}", fraud_ip(rng))


def _online(
    new_id: Callable[[], str], world: w.World, victim: Victim, remote: Remote,
    time_ms: int, merchant: int, amount_usd: float,
) -> Transaction:  # fmt: skip
    c = w.CITIES[remote.city]
    return fraud_tx(
        new_id, world, victim, time_ms, merchant, amount_usd, channel="ecommerce",
        city=remote.city, device=remote.device, ip=remote.ip, lat=c.lat, lon=c.lon,
    )  # fmt: skip


def _in_person(
    new_id: Callable[[], str], world: w.World, victim: Victim, time_ms: int, merchant: int,
    amount_usd: float, city: int,
) -> Transaction:  # fmt: skip
    """Card present at a shop: the location is the shop's."""
    lat, lon = float(world.merchants.lat[merchant]), float(world.merchants.lon[merchant])
    return fraud_tx(new_id, world, victim, time_ms, merchant, amount_usd, channel="card_present",
               city=city, device=None, ip=None, lat=lat, lon=lon)  # fmt: skip


def card_testing(
    rng: random.Random, world: w.World, victim: Victim, new_id: Callable[[], str]
) -> list[Transaction]:
    """6-20 charges of 0.50-2.50 at digital merchants seconds apart, sometimes a big one after."""
    remote = remote_identity(rng, world, victim)
    merchant = pick(rng, world.merchants.by_mcc[rng.choice(w.DIGITAL_MCCS)])
    t, out = victim.start_ms, []
    for _ in range(rng.randint(6, 20)):
        t += int(rng.expovariate(1 / 20_000)) + 1_000
        out.append(_online(new_id, world, victim, remote, t, merchant, rng.uniform(0.5, 2.5)))
    if rng.random() < 0.3:
        big = pick(rng, world.merchants.by_mcc[rng.choice(w.HIGH_VALUE_MCCS)])
        t += int(rng.expovariate(1 / (5 * MINUTE_MS)))
        out.append(_online(new_id, world, victim, remote, t, big, rng.uniform(300, 1500)))
    return out


def account_takeover(
    rng: random.Random, world: w.World, victim: Victim, new_id: Callable[[], str]
) -> list[Transaction]:
    """A new device and IP far from home, then 2-4 purchases at 8-25x the usual amount (a
    careful fraudster, one time in three, stays at 1.5-4x)."""
    remote = remote_identity(rng, world, victim)
    modest = rng.random() < 1 / 3
    t, out = victim.start_ms, []
    for _ in range(rng.randint(2, 4)):
        t += int(rng.expovariate(1 / (10 * MINUTE_MS))) + MINUTE_MS
        merchant = pick(rng, world.merchants.by_mcc[rng.choice(w.HIGH_VALUE_MCCS)])
        scale = rng.uniform(1.5, 4) if modest else rng.uniform(8, 25)
        out.append(_online(new_id, world, victim, remote, t, merchant, victim.typical_usd * scale))
    return out


def velocity_burst(
    rng: random.Random, world: w.World, victim: Victim, new_id: Callable[[], str]
) -> list[Transaction]:
    """A cloned card: 8-15 card-present purchases in the home city about a minute apart."""
    city = int(world.customers.city[victim.customer])
    pool = world.merchants.by_city_physical[city]
    t, out = victim.start_ms, []
    for _ in range(rng.randint(8, 15)):
        t += int(rng.expovariate(1 / MINUTE_MS)) + 5_000
        m = pick(rng, pool)
        amount = victim.typical_usd * rng.uniform(1.5, 4.0)
        out.append(_in_person(new_id, world, victim, t, m, amount, city))
    return out


def impossible_travel(
    rng: random.Random, world: w.World, victim: Victim, new_id: Callable[[], str]
) -> list[Transaction]:
    """Card present 3000+ km from home within two hours of a purchase at home."""
    city = _far_city(rng, int(world.customers.city[victim.customer]))
    pool = world.merchants.by_city_physical[city]
    t, out = victim.start_ms + int(rng.uniform(20, 120) * MINUTE_MS), []
    for _ in range(rng.randint(1, 3)):
        m = pick(rng, pool)
        amount = victim.typical_usd * rng.uniform(2, 6)
        out.append(_in_person(new_id, world, victim, t, m, amount, city))
        t += int(rng.expovariate(1 / (15 * MINUTE_MS))) + MINUTE_MS
    return out


def night_high_risk(
    rng: random.Random, world: w.World, victim: Victim, new_id: Callable[[], str]
) -> list[Transaction]:
    """Gambling, money transfer, crypto or jewelry between 01:00 and 05:00 at the victim's home."""
    city = int(world.customers.city[victim.customer])
    c = w.CITIES[city]
    offset_ms = int(c.utc_offset_h * HOUR_MS)
    day_ms = 24 * HOUR_MS
    local = victim.start_ms + offset_ms
    night = local - local % day_ms + HOUR_MS + int(rng.uniform(0, 4) * HOUR_MS)
    if night < local:
        night += day_ms
    t, out = night - offset_ms, []
    device = f"dev_x{rng.getrandbits(40):010x}" if rng.random() < 0.5 else None
    for _ in range(rng.randint(1, 3)):
        m = pick(rng, world.merchants.by_mcc[rng.choice(w.HIGH_RISK_MCCS)])
        amount = victim.typical_usd * rng.uniform(5, 15)
        out.append(fraud_tx(new_id, world, victim, t, m, amount, channel="ecommerce", city=city,
                       device=device, ip=fraud_ip(rng), lat=c.lat, lon=c.lon))  # fmt: skip
        t += int(min(rng.expovariate(1 / (20 * MINUTE_MS)), 30 * MINUTE_MS)) + MINUTE_MS
    return out


def legit_trip(
    rng: random.Random, world: w.World, victim: Victim, new_id: Callable[[], str]
) -> list[Transaction]:
    """A real trip: card present in a far city after a plausible flight, for one to four days."""
    home = int(world.customers.city[victim.customer])
    city = _far_city(rng, home, min_km=1500.0)
    h, c = w.CITIES[home], w.CITIES[city]
    flight_h = haversine_km(h.lat, h.lon, c.lat, c.lon) / 800.0 + 2.0
    t = victim.start_ms + int((flight_h + rng.uniform(0, 12)) * HOUR_MS)
    pool, out = world.merchants.by_city_physical[city], []
    for _ in range(rng.randint(3, 10)):
        m = pick(rng, pool)
        amount = victim.typical_usd * rng.uniform(0.5, 2.5)
        out.append(_in_person(new_id, world, victim, t, m, amount, city))
        t += int(rng.expovariate(1 / (5 * HOUR_MS))) + 20 * MINUTE_MS
    return out


def legit_micro_burst(
    rng: random.Random, world: w.World, victim: Victim, new_id: Callable[[], str]
) -> list[Transaction]:
    """In-app purchases: 3-8 charges of 0.99-4.99 at one digital merchant within minutes,
    from the customer's own device and home IP (what card testing must not be confused with)."""
    cu, home = world.customers, int(world.customers.city[victim.customer])
    c = w.CITIES[home]
    merchant = pick(rng, world.merchants.by_mcc[rng.choice(w.DIGITAL_MCCS)])
    device, ip = cu.devices[0][victim.customer], cu.ips[victim.customer]
    t, out = victim.start_ms, []
    for _ in range(rng.randint(3, 8)):
        t += int(rng.expovariate(1 / 60_000)) + 5_000
        amount = rng.choice((0.99, 0.99, 1.49, 1.99, 2.99, 4.99))
        out.append(
            fraud_tx(
                new_id,
                world,
                victim,
                t,
                merchant,
                amount,
                channel="ecommerce",
                city=home,
                device=device,
                ip=ip,
                lat=c.lat,
                lon=c.lon,
            )
        )
    return out


def legit_spree(
    rng: random.Random, world: w.World, victim: Victim, new_id: Callable[[], str]
) -> list[Transaction]:
    """A shopping afternoon: 4-9 card-present purchases in the home city within two hours."""
    city = int(world.customers.city[victim.customer])
    pool, t, out = world.merchants.by_city_physical[city], victim.start_ms, []
    for _ in range(rng.randint(4, 9)):
        t += int(rng.expovariate(1 / (12 * MINUTE_MS))) + 2 * MINUTE_MS
        m = pick(rng, pool)
        amount = victim.typical_usd * rng.uniform(0.5, 2.0)
        out.append(_in_person(new_id, world, victim, t, m, amount, city))
    return out


# Legitimate episodes that look like fraud, so that no single signal gives fraud away.
# Chance per everyday event that one starts, and the expected events per episode.
LEGIT_EPISODES: tuple[tuple[float, float, EmitFn], ...] = (
    (0.0015, 6.5, legit_trip),
    (0.0015, 5.5, legit_micro_burst),
    (0.0015, 6.5, legit_spree),
)

PATTERNS: tuple[Pattern, ...] = (
    Pattern("card_testing", 0.30, 13.0 + 0.3, card_testing),
    Pattern("account_takeover", 0.20, 3.0, account_takeover),
    Pattern("velocity_burst", 0.25, 11.5, velocity_burst),
    Pattern("impossible_travel", 0.10, 2.0, impossible_travel),
    Pattern("night_high_risk_mcc", 0.15, 2.0, night_high_risk),
)
