import functools
import math
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal

from rest_framework import serializers
from rest_framework.settings import api_settings

from fooapi.models import MAX_QUANTITY, Order, OrderLine, Product

MAX_ORDER_LINES = 50


class ProductSerializer(serializers.ModelSerializer):
    class Meta:
        model = Product
        fields = ["id", "sku", "name", "description", "price", "currency", "available"]
        # Every answer holds every field: required in the schema, where a model default (currency,
        # available, a blank description) made them optional.
        extra_kwargs = {name: {"required": True} for name in fields}

    @classmethod
    def represent(cls, rows: Iterable[Sequence]) -> list[dict]:
        """`ProductSerializer(products, many=True).data` for rows of the values of Meta.fields, with
        the fields a ModelSerializer builds on every instantiation built once per process."""
        fields = _readable_fields(cls)
        return [
            {
                name: value if value is None or type(value) is same else represent(value)
                for (name, represent, same), value in zip(fields, row, strict=True)
            }
            for row in rows
        ]

    @classmethod
    def rows_key(cls, rows: Iterable[Sequence]) -> tuple:
        """A hashable of `rows` (as represent() takes them) that is equal for two lists of rows only
        if represent() gives them equal representations: the rows themselves, and the text of each
        value that a field does not represent as is (equal Decimals can be shown differently:
        0.00 and -0.00)."""
        converted = _converted_positions(cls)
        rows = tuple(map(tuple, rows))
        return rows, tuple(repr(row[position]) for row in rows for position in converted)


# Fields whose representation of a value of this exact type is the value itself.
_REPRESENTED_AS_IS = {
    serializers.CharField: str,
    serializers.IntegerField: int,
    serializers.BooleanField: bool,
}


@functools.cache
def _readable_fields(
    serializer_class: type[serializers.Serializer],
) -> list[tuple[str, Callable[[object], object], type | None]]:
    """(name, its to_representation, the type of value it represents as is, if any) for each
    readable field."""
    return [
        (name, _to_representation(field), _REPRESENTED_AS_IS.get(type(field)))
        for name, field in serializer_class().fields.items()
        if not field.write_only
    ]


@functools.cache
def _converted_positions(serializer_class: type[serializers.Serializer]) -> tuple[int, ...]:
    """The positions of the readable fields that do not represent any value as is."""
    return tuple(
        position for position, (_, _, same) in enumerate(_readable_fields(serializer_class)) if same is None
    )


def _to_representation(field: serializers.Field) -> Callable[[object], object]:
    """field.to_representation; for a DecimalField shown as plain text, one that gives the text of a
    Decimal already at the field's places (as the database returns them) directly: DRF's quantize()
    would copy the decimal context and give back an equal value."""
    plain_text = (
        type(field) is serializers.DecimalField
        and field.decimal_places is not None
        and getattr(field, "coerce_to_string", api_settings.COERCE_DECIMAL_TO_STRING)
        and not field.localize
        and not field.normalize_output
    )
    if not plain_text:
        return field.to_representation
    places, max_digits = field.decimal_places, field.max_digits

    def decimal_text(value):
        if type(value) is Decimal and value.is_finite():
            _, digits, exponent = value.as_tuple()
            if exponent == -places and (max_digits is None or len(digits) <= max_digits):
                return f"{value:f}"
        return field.to_representation(value)

    return decimal_text


class OrderLineSerializer(serializers.ModelSerializer):
    sku = serializers.CharField(source="product.sku", read_only=True)
    name = serializers.CharField(source="product.name", read_only=True)
    line_total = serializers.DecimalField(max_digits=12, decimal_places=2, read_only=True)

    class Meta:
        model = OrderLine
        fields = ["product", "sku", "name", "quantity", "unit_price", "line_total"]


class OrderSerializer(serializers.ModelSerializer):
    lines = OrderLineSerializer(many=True, read_only=True)

    class Meta:
        model = Order
        fields = ["id", "status", "created", "currency", "total", "lines"]
        extra_kwargs = {"status": {"required": True}}  # in every answer (ProductSerializer's reason)


def is_digits(text: str) -> bool:
    """Whether `text` is a whole number written as clients write one: ASCII digits only. DRF reads
    a number sent as text with int(), which also takes "1_0" (10), other scripts' digits ("\uff11",
    a fullwidth 1) and surrounding whitespace."""
    return text.isascii() and text.isdigit()


class ProductIdField(serializers.PrimaryKeyRelatedField):
    """A product id: a JSON number that is no whole number is no id. DRF's field hands it to the
    database lookup, whose int() truncated a fraction (1.5 was product 1) and failed on infinity
    (1e400) with an OverflowError, a 500; text that is not digits (`is_digits`) is no id either."""

    def to_internal_value(self, data):
        if isinstance(data, str) and not is_digits(data):
            self.fail("incorrect_type", data_type="text")
        if isinstance(data, float) and not data.is_integer():
            self.fail("incorrect_type", data_type="fraction" if math.isfinite(data) else "infinity")
        return super().to_internal_value(data)


class WholeNumberField(serializers.IntegerField):
    """DRF's IntegerField without booleans, and taking text only when it is digits (`is_digits`)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or (isinstance(data, str) and not is_digits(data)):
            self.fail("invalid")
        return super().to_internal_value(data)


class NewOrderLineSerializer(serializers.Serializer):
    product = ProductIdField(queryset=Product.objects.all(), help_text="A product id.")
    quantity = WholeNumberField(min_value=1, max_value=MAX_QUANTITY)


class NewOrderSerializer(serializers.Serializer):
    """The body of POST /api/v1/orders."""

    # A ListField rather than many=True: its bounds are validators, which the OpenAPI schema
    # publishes (minItems, maxItems); a ListSerializer's are not.
    lines = serializers.ListField(
        child=NewOrderLineSerializer(), allow_empty=False, min_length=1, max_length=MAX_ORDER_LINES
    )


class ErrorSerializer(serializers.Serializer):
    """Every error of the API (RFC 6750 3.1 for token and scope errors)."""

    error = serializers.CharField(
        help_text=(
            "invalid_request, unauthorized, invalid_token, insufficient_scope, not_found, "
            "method_not_allowed, not_acceptable, temporarily_unavailable, ..."
        )
    )
    error_description = serializers.CharField(required=False)
    scope = serializers.CharField(required=False, help_text="With insufficient_scope: the scope needed.")
