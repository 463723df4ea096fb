"""Reference exchange rates: units of each currency per US dollar.

Features compare amounts across cards and currencies in USD, and the generator prices its
world in local currencies; both read this one table. Rates are rounded reference values, good
enough to put amounts on one scale (not for accounting). A currency not listed counts as USD.
"""

from __future__ import annotations

from typing import Final

UNITS_PER_USD: Final[dict[str, float]] = {
    "USD": 1.0, "EUR": 0.92, "GBP": 0.79, "CAD": 1.37, "AUD": 1.52, "NZD": 1.65, "CHF": 0.88,
    "SEK": 10.5, "NOK": 10.7, "DKK": 6.9, "PLN": 3.95, "CZK": 23.0, "HUF": 360.0, "RON": 4.6,
    "RUB": 92.0, "TRY": 32.0, "JPY": 150.0, "CNY": 7.2, "HKD": 7.8, "SGD": 1.35, "KRW": 1350.0,
    "INR": 83.0, "IDR": 15600.0, "PHP": 56.0, "THB": 36.0, "MYR": 4.7, "VND": 24500.0,
    "AED": 3.67, "SAR": 3.75, "ILS": 3.7, "ZAR": 18.5, "NGN": 1500.0, "KES": 130.0,
    "EGP": 48.0, "MXN": 17.1, "BRL": 5.0, "ARS": 870.0, "CLP": 940.0, "COP": 3900.0, "PEN": 3.7,
}  # fmt: skip


def to_usd(amount: float, currency: str) -> float:
    """The amount in US dollars at the reference rate."""
    return amount / UNITS_PER_USD.get(currency, 1.0)
