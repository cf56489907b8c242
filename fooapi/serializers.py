import functools
from collections.abc import Iterable, Sequence

from rest_framework import serializers

from fooapi.models import MAX_QUANTITY, Order, OrderLine, Product

MAX_ORDER_LINES = 50


class ProductSerializer(serializers.ModelSerializer):
    class Meta:
        model = Product
        fields = ["id", "sku", "name", "description", "price", "currency", "available"]

    @classmethod
    def represent(cls, rows: Iterable[Sequence]) -> list[dict]:
        """`ProductSerializer(products, many=True).data` for rows of the values of Meta.fields, with
        the fields a ModelSerializer builds on every instantiation built once per process."""
        fields = _readable_fields(cls)
        return [
            {
                name: value if value is None or type(value) is same else field.to_representation(value)
                for (name, field, same), value in zip(fields, row, strict=True)
            }
            for row in rows
        ]


# Fields whose representation of a value of this exact type is the value itself.
_REPRESENTED_AS_IS = {
    serializers.CharField: str,
    serializers.IntegerField: int,
    serializers.BooleanField: bool,
}


@functools.cache
def _readable_fields(
    serializer_class: type[serializers.Serializer],
) -> list[tuple[str, serializers.Field, type]]:
    """(name, field, the type of value it represents as is, if any) for each readable field."""
    return [
        (name, field, _REPRESENTED_AS_IS.get(type(field)))
        for name, field in serializer_class().fields.items()
        if not field.write_only
    ]


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


class NewOrderLineSerializer(serializers.Serializer):
    product = serializers.PrimaryKeyRelatedField(queryset=Product.objects.all(), help_text="A product id.")
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY)


class NewOrderSerializer(serializers.Serializer):
    """The body of POST /api/v1/orders."""

    lines = NewOrderLineSerializer(many=True, allow_empty=False, max_length=MAX_ORDER_LINES)


class ErrorSerializer(serializers.Serializer):
    """Every error of the API (RFC 6750 3.1 for token and scope errors)."""

    error = serializers.CharField(
        help_text="invalid_request, invalid_token, insufficient_scope, not_found, ..."
    )
    error_description = serializers.CharField(required=False)
    scope = serializers.CharField(required=False, help_text="With insufficient_scope: the scope needed.")
