"""The generated stream: everyday spend for the whole population, with fraud episodes merged in.

Legit events come from a thinned Poisson process in chunks (numpy draws per chunk, then one
cheap Python pass to build events), so generation keeps pace with librdkafka. Each legit event
may trigger a fraud episode on its card; episode events wait in a heap and are merged in event
time order. Event time is simulated: it starts at ``start_ms`` and advances at the population's
natural rate (customers x their daily habits), independently of how fast events are published.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from services.core.contract import Transaction
from services.generator import world as w
from services.generator.patterns import LEGIT_EPISODES, PATTERNS, EmitFn, Pattern, Victim
from services.generator.signals import SIGNAL_PATTERNS, decorate

DAY_MS = 86_400_000
_CHUNK = 4096
_DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class GeneratorConfig:
    """What to simulate; the same config gives the same events, byte for byte."""

    seed: int = 7
    customers: int = 20_000
    merchants: int = 3_000
    fraud_rate: float = 0.005  # share of events that are fraud
    start_ms: int = _DEFAULT_START_MS
    attributes: bool = False  # the signals of ``generator.signals``, and the fraud they show

    @property
    def patterns(self) -> tuple[Pattern, ...]:
        return PATTERNS + SIGNAL_PATTERNS if self.attributes else PATTERNS

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraud_rate < 0.5:
            raise ValueError(f"fraud rate must be within 0..0.5, got {self.fraud_rate}")
        if self.customers < 1 or self.merchants < 100:
            raise ValueError("need at least 1 customer and 100 merchants")


@dataclass(frozen=True)
class Labelled:
    """A generated transaction and its ground truth, which never travels in the event."""

    transaction: Transaction
    is_fraud: bool
    pattern: str | None


def _episode_odds(
    fraud_rate: float, patterns: tuple[Pattern, ...] = PATTERNS
) -> tuple[float, list[float]]:
    """Chance that an everyday event starts a fraud episode, and each pattern's chance per
    episode, such that fraud is ``fraud_rate`` of all events (legit episodes included)."""
    weights = [p.share / p.mean_events for p in patterns]
    per_episode = [wt / sum(weights) for wt in weights]
    mean_len = sum(q * p.mean_events for q, p in zip(per_episode, patterns, strict=True))
    legit_per_everyday = 1 + sum(chance * length for chance, length, _ in LEGIT_EPISODES)
    return fraud_rate * legit_per_everyday / (mean_len * (1 - fraud_rate)), per_episode


class _Ids:
    """Transaction ids: 128 random bits from the seeded stream, formatted like a UUID."""

    def __init__(self, rng: random.Random) -> None:
        self._bits = rng.getrandbits

    def __call__(self) -> str:
        h = f"{self._bits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def start_ending_now(config: GeneratorConfig, count: int, now_ms: int) -> int:
    """A start from which the ``count`` events of ``config`` end within the day before
    ``now_ms``. Simulated time runs at the population's natural rate, far faster than events
    are published: a stream started now would soon be dated hours ahead of the clock (and
    refused as ``event_time_future``). Nothing the generator draws depends on the date, so a
    start moved by whole days moves every event alike: one dry run from a guess finds it."""
    guess = now_ms - int(2 * count / (config.customers * w.MEAN_DAILY) * DAY_MS) - DAY_MS
    probe = dataclasses.replace(config, start_ms=guess)
    last = max((item.transaction.event_time_ms for item in generate(probe, count)), default=guess)
    return guess + (now_ms - last) // DAY_MS * DAY_MS


def generate(config: GeneratorConfig, count: int) -> Iterator[Labelled]:
    """Yield ``count`` labelled transactions in event-time order."""
    nrng = np.random.default_rng(config.seed)
    prng = random.Random(config.seed)
    world = w.build_world(nrng, config.customers, config.merchants)
    new_id = _Ids(prng)
    patterns = config.patterns
    episode_p, pattern_p = _episode_odds(config.fraud_rate, patterns)
    labelled = _labeller(config, world)
    pending: list[tuple[int, int, Transaction, str | None]] = []  # (time, seq, event, fraud)
    seq, produced, clock = 0, 0, config.start_ms
    while produced < count:
        times, who = _arrivals(nrng, world.customers, clock)
        clock = int(times[-1]) if times.size else clock + 1000
        for legit in _legit_events(nrng, world, times, who, new_id):
            t = legit.event_time_ms
            while pending and pending[0][0] <= t and produced < count:
                _, _, event, name = heapq.heappop(pending)
                produced += 1
                yield labelled(event, name)
            if produced >= count:
                return
            produced += 1
            yield labelled(legit, None)
            starts: list[tuple[EmitFn, str | None]] = []
            if prng.random() < episode_p:
                chosen = prng.choices(patterns, pattern_p)[0]
                starts.append((chosen.emit, chosen.name))
            u = prng.random()
            for chance, _, emit in LEGIT_EPISODES:
                if u < chance:
                    starts.append((emit, None))
                    break
                u -= chance
            for emit, name in starts:
                for event in _episode(prng, world, legit, emit, new_id):
                    seq += 1
                    heapq.heappush(pending, (event.event_time_ms, seq, event, name))


def _labelled(event: Transaction, name: str | None) -> Labelled:
    return Labelled(event, name is not None, name)


def _labeller(
    config: GeneratorConfig, world: w.World
) -> Callable[[Transaction, str | None], Labelled]:
    """How events leave the generator: as they are, or with their attributes (drawn from a
    random stream of their own: the events stay those of the seed)."""
    if not config.attributes:
        return _labelled
    rng = random.Random(config.seed ^ 0xA77)

    def with_attributes(event: Transaction, name: str | None) -> Labelled:
        owner = _owner(world, event.card_id) if not event.card_id.startswith("card_z") else None
        return _labelled(decorate(rng, world, event, name, owner), name)

    return with_attributes


def _episode(
    rng: random.Random, world: w.World, trigger: Transaction, emit: EmitFn, new_id: _Ids
) -> list[Transaction]:
    customer, second = _owner(world, trigger.card_id)
    shift = float(world.customers.amount_shift[customer])
    victim = Victim(customer, second, trigger.event_time_ms, 40.0 * float(np.exp(shift)))
    return emit(rng, world, victim, new_id)


def _owner(world: w.World, card: str) -> tuple[int, bool]:
    """Invert card_id: the scramble is a bijection, so unscramble the hex part."""
    scrambled = int(card[5:13], 16) ^ world.customers.salt
    return (scrambled * _INVERSE) & 0xFFFFFFFF, card.endswith("b")


_INVERSE = pow(2_654_435_761, -1, 2**32)


def _arrivals(
    rng: np.random.Generator, customers: w.Customers, clock: int
) -> tuple[w.IntArray, w.IntArray]:
    """One chunk of legit arrivals after ``clock``: times (ms) and customer indices.

    Candidates arrive at the peak rate; each is kept with the diurnal weight of its customer's
    local hour (thinning), which yields a day/night rhythm per time zone.
    """
    peak_per_ms = customers.daily_rate * w.DIURNAL_MAX / float(w.DIURNAL.mean()) / DAY_MS
    gaps = rng.exponential(1.0 / peak_per_ms, _CHUNK)
    times = clock + np.cumsum(gaps)
    who = np.searchsorted(customers.activity_cum, rng.random(_CHUNK), side="right")
    who = np.minimum(who, customers.activity_cum.size - 1)
    offsets = _OFFSETS[customers.city[who]]
    local_hour = ((times / 3_600_000 + offsets + customers.hour_shift[who]) % 24).astype(np.int64)
    keep = rng.random(_CHUNK) * w.DIURNAL_MAX < w.DIURNAL[local_hour]
    return times[keep].astype(np.int64), who[keep]


_OFFSETS = np.array([c.utc_offset_h for c in w.CITIES])
_FX = np.array([c.fx_per_usd for c in w.CITIES])
_CURRENCY = [c.currency for c in w.CITIES]
_COUNTRY = [c.country for c in w.CITIES]
_MEDIAN = np.array([c.median_usd for c in w.CATEGORIES])
_SIGMA = np.array([c.sigma for c in w.CATEGORIES])
_MCC = [c.mcc for c in w.CATEGORIES]
_ATM = w.MCC_INDEX["6011"]


def _legit_events(
    rng: np.random.Generator,
    world: w.World,
    times: w.IntArray,
    who: w.IntArray,
    new_id: _Ids,
) -> Iterator[Transaction]:
    """Everyday transactions: regular shops, other shops and ATMs near home, online merchants.

    Every choice is drawn for the whole chunk with numpy; the loop only assembles events.
    """
    cu, me = world.customers, world.merchants
    n = times.size
    city = cu.city[who]
    u_channel, u_pick, u_regular = rng.random(n), rng.random(n), rng.random(n)
    online = u_channel < cu.online_share[who]
    atm = ~online & (u_channel > 1.0 - cu.atm_share[who])
    regular = ~online & ~atm & (u_regular < 0.6)
    merchant = me.physical_flat.pick(city, u_pick)
    merchant[regular] = cu.regulars[
        who[regular], (u_pick[regular] * w.REGULAR_MERCHANTS).astype(int)
    ]
    merchant[atm] = me.atm_flat.pick(city[atm], u_pick[atm])
    online_pick = np.minimum(np.searchsorted(me.online_weights, u_pick[online]), me.online.size - 1)
    merchant[online] = me.online[online_pick]
    risky = online & cu.risky[who] & (u_regular < 0.3)
    merchant[risky] = me.risky_online[(u_pick[risky] * me.risky_online.size).astype(int)]
    category = me.category[merchant]
    usd = _MEDIAN[category] * np.exp(
        cu.amount_shift[who] + _SIGMA[category] * rng.standard_normal(n)
    )
    usd[atm] = np.maximum(20.0, np.round(usd[atm] / 20.0) * 20.0)
    amount = np.round(np.maximum(usd * _FX[city], 0.01), 2)
    # Online: where the customer's device is (home); in person: the merchant's location.
    lat = np.where(online, cu.lat[who], me.lat[merchant]) + rng.normal(0.0, 0.005, n)
    lon = np.where(online, cu.lon[who], me.lon[merchant]) + rng.normal(0.0, 0.005, n)
    second_card = cu.second_card[who] & (rng.random(n) < 0.3)
    u_device = rng.random(n)
    second_device = u_device < 0.1
    borrowed = u_device > 0.99  # a one-off device: a work computer, a friend's phone
    borrowed_ids = rng.integers(0, 2**40, n)
    channel = np.where(online, "ecommerce", np.where(atm, "atm", "card_present"))
    rows = zip(
        times.tolist(), who.tolist(), city.tolist(), category.tolist(), merchant.tolist(),
        amount.tolist(), np.round(lat, 5).tolist(), np.round(lon, 5).tolist(),
        channel.tolist(), second_card.tolist(), second_device.tolist(), borrowed.tolist(),
        borrowed_ids.tolist(), strict=True,
    )  # fmt: skip
    cards, devices = cu.cards, cu.devices
    for t, c, home, cat, m, amt, la, lo, chan, card2, dev2, lent, lent_id in rows:  # fmt: skip
        is_online = chan == "ecommerce"
        device = (f"dev_b{lent_id:010x}" if lent else devices[dev2][c]) if is_online else None
        yield Transaction(
            transaction_id=new_id(),
            event_time=t,
            card_id=cards[card2][c],
            customer_id=cu.ids[c],
            merchant_id=me.ids[m],
            merchant_category=_MCC[cat],
            amount=amt,
            currency=_CURRENCY[home],
            country=_COUNTRY[home],
            channel=chan,
            device_id=device,
            ip=cu.ips[c] if is_online else None,
            lat=la,
            lon=lo,
        )
