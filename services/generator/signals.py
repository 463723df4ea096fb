"""The attributes real issuers and merchants send, and fraud that only they reveal.

With ``GeneratorConfig(attributes=True)`` every event carries the attributes declared in
``signals.yaml`` beside this module (BIN, network, card type, billing and shipping country,
e-mail domain and address, entry mode, 3-D Secure, account age), drawn from a stable profile
per customer, and three patterns join the card-level ones:

- ``fraud_ring``: stolen cards of many victims used online from a handful of shared devices
  and e-mail domains, shipping to drop countries (many cards per device: the link counts);
- ``bin_attack``: card numbers enumerated within one BIN, each new card charging a tiny
  amount at one merchant within minutes (no card history at all: only the BIN's windows);
- ``compromised_email``: accounts at a breached e-mail provider, taken over from new devices
  and shipped elsewhere (the provider's windows, and its code, against a legit minority).

The existing patterns show in the attributes too: a cloned card is swiped (magnetic stripe),
an account takeover ships abroad without 3-D Secure, card testing comes from throw-away
domains. Legitimate look-alikes keep any single attribute from giving fraud away: shared
devices (a family computer, a kiosk), gifts shipped abroad, throw-away domains, swipes.
Attributes come from a random stream of their own, so the same seed gives the same events.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any, Final

import msgspec

from services.core.contract import Transaction
from services.core.signals import Signals, parse_signals
from services.generator import world as w
from services.generator.patterns import (
    Pattern,
    Victim,
    fraud_ip,
    fraud_tx,
    pick,
    remote_identity,
)

NETWORKS: Final = {"4": "visa", "5": "mastercard", "3": "amex", "6": "discover"}
BINS: Final = tuple(
    f"{first}{n:05d}" for first, count in (("4", 180), ("5", 120), ("3", 12), ("6", 8))
    for n in range(7, 7 + count * 37, 37)
)  # fmt: skip
DOMAINS: Final = (
    ("gmail.com", 0.38), ("yahoo.com", 0.1), ("outlook.com", 0.1), ("hotmail.com", 0.07),
    ("icloud.com", 0.08), ("aol.com", 0.02), ("proton.me", 0.02), ("web.de", 0.03),
    ("orange.fr", 0.03), ("comcast.net", 0.03), ("gmx.net", 0.02),
)  # fmt: skip
THROWAWAY: Final = ("tempmail.dev", "mailnesia.io", "10minute.email")
BREACHED: Final = ("mailbox-west.net", "kayomail.com")
RING_DOMAINS: Final = ("fastinbox.co", "securemail-pro.net", "tempmail.dev")
DROP_COUNTRIES: Final = ("NG", "RO", "UA", "VN", "BR")
RING_DEVICES: Final = 4
KIOSK_DEVICES: Final = 40


@cache
def generated_signals() -> Signals:
    """The signals file of generated events (``signals.yaml`` beside this module)."""
    text = resources.files("services.generator").joinpath("signals.yaml").read_text()
    return parse_signals(text, "signals.yaml")


def _unit(*parts: object) -> float:
    """A stable uniform number in [0, 1) of ``parts``."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _weighted(u: float, choices: tuple[tuple[str, float], ...]) -> str:
    total = sum(weight for _, weight in choices)
    for value, weight in choices:
        u -= weight / total
        if u < 0:
            return value
    return choices[-1][0]


class Profile(msgspec.Struct, frozen=True):
    """What stays the same for a customer's card and account."""

    card_bin: str
    card_type: str
    email_domain: str
    email: str
    billing_country: str
    opened_days_ago: float


def profile(world: w.World, customer: int, second: bool) -> Profile:
    """A customer's card and account, derived from who they are (no random draws)."""
    salt = world.customers.salt
    u = _unit(salt, customer)
    bin_index = min(int(_unit(salt, customer, second, "bin") ** 1.6 * len(BINS)), len(BINS) - 1)
    domain = _weighted(u, DOMAINS)
    if u > 0.985:  # a few real customers of throw-away and breached providers
        domain = (THROWAWAY + BREACHED)[int(_unit(salt, customer, "odd") * 5)]
    elif u > 0.97:  # and of small local providers
        domain = f"isp{int(_unit(salt, customer, 'isp') * 400)}.net"
    return Profile(
        card_bin=BINS[bin_index],
        card_type="credit" if _unit(salt, customer, second, "type") < 0.55 else "debit",
        email_domain=domain,
        email=f"{world.customers.ids[customer]}@{domain}",
        billing_country=w.CITIES[int(world.customers.city[customer])].country,
        opened_days_ago=round(30 + _unit(salt, customer, "age") * 3000, 1),
    )


def _card_attributes(p: Profile) -> dict[str, Any]:
    return {"card_bin": p.card_bin, "card_network": NETWORKS[p.card_bin[0]],
            "card_type": p.card_type, "billing_country": p.billing_country}  # fmt: skip


def decorate(
    rng: random.Random, world: w.World, tx: Transaction, pattern: str | None,
    owner: tuple[int, bool] | None,
) -> Transaction:  # fmt: skip
    """``tx`` with its attributes: the card's and account's, then what its pattern changes
    (a pattern's own ``attributes`` are kept as they are)."""
    given = dict(tx.attributes or {})
    attributes: dict[str, Any] = {}
    p = profile(world, *owner) if owner is not None else None
    if p is not None:
        attributes |= _card_attributes(p)
    if tx.channel == "ecommerce":
        attributes |= _online(rng, tx, pattern, p)
        if pattern is None and rng.random() < 0.01:  # a shared device: many cards, all good
            tx = msgspec.structs.replace(tx, device_id=kiosk_device(rng, world.customers.salt))
    else:
        swiped = {"velocity_burst": 0.7, "impossible_travel": 0.5}.get(pattern or "", 0.03)
        attributes["entry_mode"] = ("swipe" if rng.random() < swiped else
                                    "contactless" if rng.random() < 0.4 else "chip")  # fmt: skip
    attributes |= given
    return msgspec.structs.replace(tx, attributes=attributes)


def _online(
    rng: random.Random, tx: Transaction, pattern: str | None, p: Profile | None
) -> dict[str, Any]:
    """E-commerce attributes: the account's e-mail, shipping, 3-D Secure."""
    out: dict[str, Any] = {"entry_mode": "ecommerce"}
    if p is not None:
        out |= {
            "email_domain": p.email_domain,
            "email": p.email,
            "account_age_days": p.opened_days_ago,
            "shipping_country": p.billing_country,
        }
    out["three_ds"] = rng.random() < 0.85
    if pattern is None:
        if rng.random() < 0.04:  # a gift sent abroad
            out["shipping_country"] = rng.choice(w.CITIES).country
    elif pattern == "card_testing":
        out["three_ds"] = False
        if rng.random() < 0.6:
            domain = rng.choice(THROWAWAY)
            out |= {"email_domain": domain, "email": f"u{rng.getrandbits(24):x}@{domain}",
                    "account_age_days": 0.0}  # fmt: skip
        out.pop("shipping_country", None)  # digital goods
    elif pattern == "account_takeover":
        out["three_ds"] = rng.random() < 0.3
        out["shipping_country"] = tx.country  # where the fraudster is
    return out


def fraud_ring(
    rng: random.Random, world: w.World, victim: Victim, new_id: Callable[[], str]
) -> list[Transaction]:
    """A stolen card used online, 1-3 times within hours, from one of a ring's few devices and
    accounts, shipped to a drop country."""
    week = victim.start_ms // (7 * 86_400_000)  # a ring works from a few devices a week
    device = f"dev_r{(world.customers.salt + week * 7 + rng.randrange(RING_DEVICES)):x}"
    domain = rng.choice(RING_DOMAINS)
    remote = remote_identity(rng, world, victim)
    t, out = victim.start_ms, []
    for _ in range(rng.randint(1, 3)):
        t += int(rng.expovariate(1 / (40 * 60_000))) + 60_000
        merchant = pick(rng, world.merchants.by_mcc[rng.choice(w.HIGH_VALUE_MCCS)])
        c = w.CITIES[remote.city]
        tx = fraud_tx(new_id, world, victim, t, merchant, victim.typical_usd * rng.uniform(2, 8),
                 channel="ecommerce", city=remote.city, device=device, ip=remote.ip,
                 lat=c.lat, lon=c.lon)  # fmt: skip
        attributes = {"email_domain": domain, "email": f"r{rng.getrandbits(20):x}@{domain}",
                      "shipping_country": rng.choice(DROP_COUNTRIES), "three_ds": False,
                      "account_age_days": round(rng.uniform(0, 3), 1)}  # fmt: skip
        out.append(msgspec.structs.replace(tx, attributes=attributes))
    return out


def bin_attack(
    rng: random.Random, world: w.World, victim: Victim, new_id: Callable[[], str]
) -> list[Transaction]:
    """Card numbers enumerated in one BIN: 10-30 never-seen cards, one tiny charge each at
    one online merchant, seconds apart."""
    target = rng.choice(BINS[len(BINS) // 2 :])  # a less common BIN: its windows stand out
    merchant = pick(rng, world.merchants.by_mcc[rng.choice(w.DIGITAL_MCCS)])
    remote = remote_identity(rng, world, victim)
    c = w.CITIES[remote.city]
    t, out = victim.start_ms, []
    for _ in range(rng.randint(10, 30)):
        t += int(rng.expovariate(1 / 8_000)) + 500
        card = f"card_z{rng.getrandbits(40):010x}"
        tx = fraud_tx(
            new_id,
            world,
            victim,
            t,
            merchant,
            rng.uniform(0.5, 3.0),
            channel="ecommerce",
            city=remote.city,
            device=None,
            ip=fraud_ip(rng),
            lat=c.lat,
            lon=c.lon,
        )
        attributes = {"card_bin": target, "card_network": NETWORKS[target[0]],
                      "card_type": rng.choice(("debit", "credit")), "three_ds": False,
                      "entry_mode": "ecommerce"}  # fmt: skip
        out.append(msgspec.structs.replace(tx, card_id=card, customer_id=f"cust_{card[6:]}",
                                           attributes=attributes))  # fmt: skip
    return out


def compromised_email(
    rng: random.Random, world: w.World, victim: Victim, new_id: Callable[[], str]
) -> list[Transaction]:
    """An account at a breached provider taken over: 1-3 purchases from a new device, shipped
    to another country, at 2-6 times the usual amount."""
    domain = rng.choice(BREACHED)
    remote = remote_identity(rng, world, victim)
    c = w.CITIES[remote.city]
    t, out = victim.start_ms, []
    for _ in range(rng.randint(1, 3)):
        t += int(rng.expovariate(1 / (20 * 60_000))) + 60_000
        merchant = pick(rng, world.merchants.by_mcc[rng.choice(w.HIGH_VALUE_MCCS)])
        tx = fraud_tx(new_id, world, victim, t, merchant, victim.typical_usd * rng.uniform(2, 6),
                 channel="ecommerce", city=remote.city, device=remote.device, ip=remote.ip,
                 lat=c.lat, lon=c.lon)  # fmt: skip
        attributes = {"email_domain": domain, "email": f"v{rng.getrandbits(24):x}@{domain}",
                      "shipping_country": rng.choice((*DROP_COUNTRIES, tx.country)),
                      "three_ds": rng.random() < 0.4}  # fmt: skip
        out.append(msgspec.structs.replace(tx, attributes=attributes))
    return out


SIGNAL_PATTERNS: Final = (
    Pattern("fraud_ring", 0.12, 2.0, fraud_ring),
    Pattern("bin_attack", 0.12, 20.0, bin_attack),
    Pattern("compromised_email", 0.08, 2.0, compromised_email),
)


def kiosk_device(rng: random.Random, salt: int) -> str:
    """A device many customers share legitimately (a family computer, a hotel kiosk)."""
    return f"dev_k{(salt + rng.randrange(KIOSK_DEVICES)) & 0xFFFFFF:06x}"
