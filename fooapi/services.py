"""What the Foo API does: place orders, seed the demo catalogue."""

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from authserver.models import Application
from fooapi.models import MAX_ORDER_TOTAL, Order, OrderLine, Product

# SKU, name, description, price in EUR
DEMO_CATALOGUE = [
    (
        "FOO-SENSOR-01",
        "Foo Sensor",
        "Temperature and humidity sensor with a two-year battery.",
        "24.90",
    ),
    (
        "FOO-GATEWAY-01",
        "Foo Gateway",
        "Connects up to 64 Foo sensors to the Foo cloud over Ethernet or Wi-Fi.",
        "149.00",
    ),
    (
        "FOO-RELAY-02",
        "Foo Smart Relay",
        "Switches loads up to 16 A; reports energy use every minute.",
        "39.50",
    ),
    ("FOO-CAM-01", "Foo Camera", "1080p indoor camera with on-device motion detection.", "89.00"),
    (
        "FOO-KIT-START",
        "Foo Starter Kit",
        "A gateway, three sensors and a smart relay: everything for a first installation.",
        "229.00",
    ),
    (
        "FOO-CLOUD-M",
        "Foo Cloud, monthly plan",
        "Hosted dashboards, alerts and 90 days of history for up to 100 devices.",
        "19.00",
    ),
    (
        "FOO-CABLE-USB",
        "Foo USB-C Cable",
        "Braided 1.5 m USB-C cable for gateways and cameras.",
        "9.90",
    ),
    (
        "FOO-MOUNT-01",
        "Foo Wall Mount",
        "Tilting wall mount for the Foo Camera. Discontinued; kept for existing orders.",
        "14.00",
    ),
]
DISCONTINUED = {"FOO-MOUNT-01"}


@dataclass(frozen=True)
class LineRequest:
    product: Product
    quantity: int


def seed_demo_catalogue() -> int:
    """Create the demo products that are missing (by SKU); returns how many were created.
    Products that exist are left as an operator may have edited them."""
    created = 0
    for sku, name, description, price in DEMO_CATALOGUE:
        _, was_created = Product.objects.get_or_create(
            sku=sku,
            defaults={
                "name": name,
                "description": description,
                "price": Decimal(price),
                "currency": "EUR",
                "available": sku not in DISCONTINUED,
            },
        )
        created += was_created
    return created


@transaction.atomic
def place_order(*, client: Application, lines: Sequence[LineRequest]) -> Order:
    """An order for `client` at today's prices. ValidationError when a line cannot be ordered."""
    if not lines:
        raise ValidationError({"lines": "An order needs at least one line."})
    products = [line.product for line in lines]
    if len({product.pk for product in products}) != len(products):
        raise ValidationError({"lines": "List each product once; use its quantity for more."})
    # Re-read under lock: availability and price as they are when the order is written. Locked in
    # one order (the primary key's) by every order: two orders of the same products never deadlock.
    current = Product.objects.select_for_update().order_by("pk").in_bulk([product.pk for product in products])
    # Deleted since the lines were validated (the catalogue is the operators' to edit meanwhile).
    gone = [str(product.pk) for product in products if product.pk not in current]
    if gone:
        raise ValidationError({"lines": f"No longer in the catalogue: product {', '.join(gone)}."})
    unavailable = [current[product.pk].sku for product in products if not current[product.pk].available]
    if unavailable:
        raise ValidationError({"lines": f"Not available for ordering: {', '.join(unavailable)}."})
    currencies = {current[product.pk].currency for product in products}
    if len(currencies) != 1:
        raise ValidationError({"lines": "All products of an order must be priced in one currency."})
    order_lines = [
        OrderLine(
            product=current[line.product.pk],
            quantity=line.quantity,
            unit_price=current[line.product.pk].price,
        )
        for line in lines
    ]
    currency = currencies.pop()
    total = sum((line.line_total for line in order_lines), Decimal("0"))
    if total > MAX_ORDER_TOTAL:
        raise ValidationError({"lines": f"An order's total can be at most {MAX_ORDER_TOTAL} {currency}."})
    order = Order.objects.create(client=client, currency=currency, total=total)
    for line in order_lines:
        line.order = order
        line.full_clean(exclude=["order", "product"])
    OrderLine.objects.bulk_create(order_lines)
    return order
