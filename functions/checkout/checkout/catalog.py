"""The product catalog (migration 0004), as checkout sells it: web prices only."""

from __future__ import annotations

from dataclasses import dataclass

from checkout.models import Product
from common import db
from common.errors import InvalidInput, NotFound

WEB_PROVIDERS = ("stripe", "paymob")

# --- Queries ---------------------------------------------------------------------------

#: Active products with at least one web price, credit packs first.
PRODUCTS = """
SELECT p.id, p.kind, p.name, p.credits, p.entitlement_ids, p.period_days,
       jsonb_agg(jsonb_build_object('provider', pp.provider, 'currency', pp.currency,
                                    'amount_minor', pp.amount_minor)
                 ORDER BY pp.provider, pp.currency) AS prices
FROM products p
JOIN product_prices pp ON pp.product_id = p.id AND pp.provider = ANY(%(providers)s)
WHERE p.active
GROUP BY p.id
ORDER BY p.kind, p.credits, p.id
"""

PRICE = """
SELECT p.id, p.kind, p.name, p.credits, p.period_days, pp.currency, pp.amount_minor, pp.provider_product_id
FROM products p
JOIN product_prices pp ON pp.product_id = p.id
WHERE p.id = %(product_id)s AND p.active AND pp.provider = %(provider)s AND pp.currency = %(currency)s
"""

PRODUCT_EXISTS = "SELECT 1 FROM products WHERE id = %(product_id)s AND active"


@dataclass(frozen=True)
class PriceRow:
    id: str
    kind: str
    name: str
    credits: int
    period_days: int | None
    currency: str
    amount_minor: int
    provider_product_id: str | None


def products() -> list[Product]:
    rows = db.execute(PRODUCTS, {"providers": list(WEB_PROVIDERS)}, idempotent=True).fetchall()
    return [Product.model_validate(row) for row in rows]


def price(product_id: str, provider: str, currency: str) -> PriceRow:
    """The product's price with ``provider`` in ``currency``: NotFound for an unknown or
    inactive product, InvalidInput when it is not sold that way."""
    params = {"product_id": product_id, "provider": provider, "currency": currency.upper()}
    row = db.execute(PRICE, params, idempotent=True).fetchone()
    if row is not None:
        return PriceRow(**row)
    if db.execute(PRODUCT_EXISTS, params, idempotent=True).fetchone() is None:
        raise NotFound("product not found")
    raise InvalidInput(f"this product is not sold with {provider} in {params['currency']}")
