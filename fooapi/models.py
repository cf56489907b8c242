from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

MAX_QUANTITY = 1000


def largest_value(field: models.DecimalField) -> Decimal:
    """The largest value `field` holds: max_digits digits, decimal_places of them places."""
    return Decimal(10) ** (field.max_digits - field.decimal_places) - Decimal(1).scaleb(-field.decimal_places)


class Product(models.Model):
    """An item of the Foo catalogue."""

    sku = models.CharField("SKU", max_length=32, unique=True)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    price = models.DecimalField(max_digits=10, decimal_places=2, validators=[MinValueValidator(Decimal("0"))])
    currency = models.CharField(max_length=3, default="EUR", help_text="ISO 4217 code, e.g. EUR.")
    available = models.BooleanField(default=True, help_text="Only available products can be ordered.")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.sku})"


class CatalogueVersion(models.Model):
    """The catalogue's version: one row, given a new random value by the database itself (triggers
    made by migration 0002) in the transaction of every INSERT, UPDATE, DELETE and, on PostgreSQL,
    TRUNCATE of the products' table, however it is made (the console, a command, a queryset's
    update(), raw SQL). A worker that read a catalogue page in the statement that read this value
    answers that page again while the value is the same (hotpath.CompiledPages): never a page
    older than the last committed change."""

    ROW = 1  # the primary key of the one row

    value = models.BigIntegerField()

    def __str__(self) -> str:
        return f"catalogue version {self.value}"


class Order(models.Model):
    """An order placed through the API by a client; only that client ever sees it."""

    class Status(models.TextChoices):
        PLACED = "placed", "placed"

    client = models.ForeignKey(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL, on_delete=models.CASCADE, related_name="orders"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PLACED)
    currency = models.CharField(max_length=3)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["client", "-created"])]

    def __str__(self) -> str:
        return f"Order {self.pk} ({self.total} {self.currency})"


MAX_ORDER_TOTAL = largest_value(Order._meta.get_field("total"))


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="order_lines")
    quantity = models.PositiveIntegerField(validators=[MinValueValidator(1), MaxValueValidator(MAX_QUANTITY)])
    # The price when the order was placed; later catalogue changes do not rewrite orders.
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["order", "product"], name="one_line_per_product")]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.product.sku}"

    @property
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity
