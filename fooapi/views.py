"""The Foo API (/api/v1/): a protected resource that knows callers only by their bearer token.

Authentication, scope checks and RFC 6750 errors are REST_FRAMEWORK's defaults (authserver's
BearerTokenAuthentication, TokenHasRequiredScopes, api_exception_handler); views name their scopes.
"""

import threading
from collections.abc import Hashable, Sequence

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.paginator import InvalidPage, Page
from django.urls import reverse
from django.views.generic import TemplateView
from drf_spectacular.renderers import (
    OpenApiJsonRenderer,
    OpenApiJsonRenderer2,
    OpenApiYamlRenderer,
    OpenApiYamlRenderer2,
)
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from drf_spectacular.views import SpectacularAPIView
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from authserver import errors, hotpath
from authserver.views import BareOptionsAPIMixin, ReadOnlyEndpointMixin
from fooapi import services
from fooapi.models import CatalogueVersion, Order, Product
from fooapi.serializers import ErrorSerializer, NewOrderSerializer, OrderSerializer, ProductSerializer

# The errors the operations answer, as the schema describes them. No 429: the Foo API is not rate
# limited (the token endpoint and client authentication are, authserver/throttling.py).
MALFORMED = (
    "Bearer credentials that are not one access token (with a Bearer challenge naming invalid_request), "
    "a Content-Length that is not a number, or too many query parameters"
)
UNKNOWN_FORMAT = "`format` names a format the API does not answer in (json only)"
BAD_REQUEST = OpenApiResponse(ErrorSerializer, f"The request is malformed: {MALFORMED}.")
UNAUTHORIZED = OpenApiResponse(
    ErrorSerializer, "No token, or an invalid, expired or revoked token (with a Bearer challenge)."
)
FORBIDDEN = OpenApiResponse(
    ErrorSerializer, "The token lacks the scope this operation needs, named in `scope` and in the challenge."
)
NOT_FOUND = OpenApiResponse(
    ErrorSerializer, f"No such resource (or it belongs to another client), or {UNKNOWN_FORMAT}."
)
NO_SUCH_FORMAT = OpenApiResponse(ErrorSerializer, f"{UNKNOWN_FORMAT}.")
NOT_ACCEPTABLE = OpenApiResponse(ErrorSerializer, "The Accept header allows no type the API answers in.")
TOO_LARGE = OpenApiResponse(ErrorSerializer, "The request body is larger than the server takes.")
ENCODED_BODY = OpenApiResponse(
    ErrorSerializer,
    "A body sent compressed (Content-Encoding; the answer names `Accept-Encoding: identity`), or a "
    "Content-Type whose charset is not a text encoding.",
)
NOT_IMPLEMENTED = OpenApiResponse(ErrorSerializer, "A Transfer-Encoding other than chunked.")
UNAVAILABLE = OpenApiResponse(
    ErrorSerializer, "The database is unreachable (`temporarily_unavailable`): retry after Retry-After."
)
# The errors every operation can answer, whatever its view does: DRF's content negotiation, the
# token check and ProtocolErrorMiddleware answer them (each view adds its own, api_responses()).
EVERY_OPERATION = {
    400: BAD_REQUEST,
    401: UNAUTHORIZED,
    403: FORBIDDEN,
    404: NO_SUCH_FORMAT,
    406: NOT_ACCEPTABLE,
    413: TOO_LARGE,
    415: ENCODED_BODY,
    501: NOT_IMPLEMENTED,
    503: UNAVAILABLE,
}
# The headers of those errors (RFC 6750 3, RFC 9728 5.1; RFC 9110 10.2.3, 12.5.3).
ERROR_HEADERS = [
    OpenApiParameter(
        "WWW-Authenticate",
        str,
        OpenApiParameter.HEADER,
        required=True,
        response=[401, 403],
        description="The Bearer challenge, naming the resource's metadata (`resource_metadata`).",
    ),
    OpenApiParameter(
        "WWW-Authenticate",
        str,
        OpenApiParameter.HEADER,
        response=[400],
        description="For malformed Bearer credentials: the challenge naming invalid_request.",
    ),
    OpenApiParameter(
        "Accept-Encoding",
        str,
        OpenApiParameter.HEADER,
        response=[415],
        description="`identity`, for a body sent compressed.",
    ),
    OpenApiParameter(
        "Retry-After",
        int,
        OpenApiParameter.HEADER,
        required=True,
        response=[503],
        description="Seconds to wait before trying again.",
    ),
]
ORDER_LOCATION = OpenApiParameter(
    "Location", str, OpenApiParameter.HEADER, required=True, response=[201], description="The order's path."
)


def api_responses(own: dict) -> dict:
    """An operation's responses: its view's own (`own`), and the errors of EVERY_OPERATION it does
    not describe itself, by status."""
    return dict(sorted({**EVERY_OPERATION, **own}.items()))


NO_SUCH_PAGE = OpenApiResponse(ErrorSerializer, f"A page past the last one, or {UNKNOWN_FORMAT}.")
BAD_PAGE = OpenApiResponse(
    ErrorSerializer,
    f"`page` or `page_size` is not a whole number in range, or the request is malformed: {MALFORMED}.",
)
NOT_AN_ORDER = OpenApiResponse(
    ErrorSerializer, f"The body is not a valid order, or the request is malformed: {MALFORMED}."
)
NOT_JSON = OpenApiResponse(
    ErrorSerializer,
    "The body is not sent as application/json, is sent compressed (Content-Encoding; the answer names "
    "`Accept-Encoding: identity`), or names a charset that is not a text encoding.",
)
TIMED_OUT = OpenApiResponse(ErrorSerializer, "The request body did not arrive in time.")


# The highest page number asked for that is answered (past the last page, a 404): its OFFSET stays
# well within every database's integers.
MAX_PAGE_NUMBER = 10**9


class Pages(PageNumberPagination):
    """`?page=N&page_size=M`, each given at most once as a whole number in range: anything else is a
    400 (never silently ignored); a page past the last one is a 404."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 100
    # By read_ahead(): the page number and size it validated, the page it read.
    requested: tuple[int, int] | None = None
    read_early: tuple[list[Sequence], int] | None = None

    def paginate_queryset(self, queryset, request, view=None):
        self.validate_page_parameters(request)
        return super().paginate_queryset(queryset, request, view)

    def read_ahead(self, pages: hotpath.CompiledPages, request) -> None:
        """Before the token is checked: the requested page, read with the request's shared
        validity epoch (`CompiledPages.page_and_epoch`) when there is a bearer token to check and
        the page parameters are valid (otherwise the 401 or 400 comes first, as without this)."""
        bearer = request.META.get("HTTP_AUTHORIZATION", "")[:7].lower() == "bearer "
        if request.method not in ("GET", "HEAD") or not bearer:
            return
        try:
            self.validate_page_parameters(request)
        except serializers.ValidationError:
            return
        self.requested = self._requested(request)
        number, size = self.requested
        self.read_early = pages.page_and_epoch(offset=(number - 1) * size, limit=size)

    def paginate_rows(self, pages: hotpath.CompiledPages, request) -> list[Sequence]:
        """The requested page of `pages`, whose statement also counts all rows (no COUNT query)."""
        self.request = request
        if self.requested is None:  # not validated by read_ahead()
            self.validate_page_parameters(request)
            self.requested = self._requested(request)
        number, size = self.requested
        rows, total = self.read_early or pages.page(offset=(number - 1) * size, limit=size)
        paginator = self.django_paginator_class(rows, size)
        paginator.count = total or 0  # none: past the last row (or an empty first page)
        try:
            self.page = Page(rows, paginator.validate_number(number), paginator)
        except InvalidPage as error:
            raise NotFound(self.invalid_page_message) from error
        return rows

    def get_next_link(self) -> str | None:
        if not self.page.has_next():
            return None
        return replace_query_param(self._public_url(), self.page_query_param, self.page.next_page_number())

    def get_previous_link(self) -> str | None:
        if not self.page.has_previous():
            return None
        number = self.page.previous_page_number()
        if number == 1:
            return remove_query_param(self._public_url(), self.page_query_param)
        return replace_query_param(self._public_url(), self.page_query_param, number)

    def _public_url(self) -> str:
        """This request's URL on ISSUER, the API's public address, whatever Host header it came
        with (DRF builds the links on that one: another name of the server, or a proxy's)."""
        return settings.ISSUER + self.request.get_full_path()

    def _requested(self, request) -> tuple[int, int]:
        """(page number, page size), once validate_page_parameters() has accepted them."""
        return int(request.query_params.get(self.page_query_param, 1)), self.get_page_size(request)

    def validate_page_parameters(self, request) -> None:
        limits = {self.page_query_param: None, self.page_size_query_param: self.max_page_size}
        for name, maximum in limits.items():
            values = request.query_params.getlist(name)
            if not values:
                continue
            # ASCII digits only: str.isdigit() also holds for "²", which int() refuses (a 500), and
            # for other scripts' digits, which no client means as a page number. At most 20 of them
            # (zero-padded, say): int() refuses over 4300 (a 500), here and where the page is read.
            value = values[0] if len(values) == 1 else ""
            largest = maximum or MAX_PAGE_NUMBER
            in_range = value.isascii() and value.isdigit() and len(value) <= 20 and 1 <= int(value) <= largest
            if not in_range:
                raise serializers.ValidationError({name: f"Give one whole number, 1 to {largest}."})

    def get_paginated_response_schema(self, schema):
        paginated = super().get_paginated_response_schema(schema)
        # Every page holds all four members (`next` and `previous` null at the edges): required, as
        # ProductSerializer's are, or clients generated from the schema make the links optional.
        paginated["required"] = list(paginated["properties"])
        return paginated

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["maximum"] = MAX_PAGE_NUMBER
            else:
                parameter["schema"]["maximum"] = self.max_page_size
        return parameters


class RememberedPages:
    """The last pages answered, represented and rendered: a page made of what an earlier answer was
    made of (equal rows, as the serializer's rows_key() compares them, the same count and links) is
    answered with that answer's data and, for the same JSON indent, its body: neither represented
    nor rendered again (docs/benchmarks.md item 31). Its rows are still read from the database for
    every call; the process remembers at most `size` pages, forgetting the oldest first."""

    def __init__(self, size: int = 64):
        self.size = size
        self._pages: dict[Hashable, tuple[object, dict]] = {}
        self._lock = threading.Lock()

    def response(
        self, paginator: Pages, rows: list[Sequence], serializer: type[ProductSerializer]
    ) -> Response:
        """`paginator.get_paginated_response(serializer.represent(rows))`, remembered."""
        key = (
            serializer.rows_key(rows),
            paginator.page.paginator.count,
            paginator.get_next_link(),
            paginator.get_previous_link(),
        )
        remembered = self._pages.get(key)
        if remembered is None:
            remembered = (paginator.get_paginated_response(serializer.represent(rows)).data, {})
            with self._lock:
                while len(self._pages) >= self.size:
                    del self._pages[next(iter(self._pages))]
                self._pages[key] = remembered
        data, bodies = remembered
        return _RenderedOnce(data, bodies)

    def __len__(self) -> int:
        return len(self._pages)

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()


class _RenderedOnce(Response):
    """A Response whose body DRF's JSONRenderer renders once for each indent it can give (none, or
    1 to 8 from `Accept: application/json; indent=N`), then taken from `bodies` with the
    Content-Type DRF gave it. Keyed by the indent, not the Accept header's text: parameters that
    change nothing are not a new body each. Any other renderer renders every time."""

    def __init__(self, data, bodies: dict):
        super().__init__(data)
        self._bodies = bodies

    @property
    def rendered_content(self):
        renderer = self.accepted_renderer
        if not _renders_as_drfs_json(type(renderer)):
            return super().rendered_content
        key = renderer.get_indent(self.accepted_media_type, self.renderer_context)
        rendered = self._bodies.get(key)
        if rendered is None:
            body = super().rendered_content
            rendered = self._bodies[key] = (self.get("Content-Type"), body)
        content_type, body = rendered
        if content_type is None:  # DRF takes it away for an empty body
            self.headers.pop("Content-Type", None)
        else:
            self["Content-Type"] = content_type
        return body


def _renders_as_drfs_json(renderer_class: type) -> bool:
    """Whether the renderer's output is DRF's JSONRenderer's: a function of the data and the indent."""
    return (
        issubclass(renderer_class, JSONRenderer)
        and renderer_class.render is JSONRenderer.render
        and renderer_class.get_indent is JSONRenderer.get_indent
    )


class NotStoredMixin:
    """Every answer is to one client's token and may be that client's own data (its orders): no
    cache keeps it (RFC 9111 5.2.2.5), as none keeps the API's errors (authserver.errors)."""

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        for name, value in errors.NO_STORE.items():
            response.setdefault(name, value)
        return response


@extend_schema_view(
    get=extend_schema(
        summary="List the catalogue",
        description="Needs the `products:read` scope.",
        parameters=ERROR_HEADERS,
        responses=api_responses({200: ProductSerializer(many=True), 400: BAD_PAGE, 404: NO_SUCH_PAGE}),
    )
)
class ProductList(NotStoredMixin, BareOptionsAPIMixin, generics.ListAPIView):
    """The most requested page of the API, served without the ORM's per-request work: one statement
    compiled once per process returns the page and the count, ProductSerializer's fields are built
    once, and equal rows are represented and rendered once (docs/benchmarks.md). The answer is what
    ListAPIView would give."""

    queryset = Product.objects.all()
    serializer_class = ProductSerializer
    pagination_class = Pages
    required_scopes = ["products:read"]
    catalogue = hotpath.CompiledPages(
        lambda: Product.objects.values_list(*ProductSerializer.Meta.fields), version=CatalogueVersion
    )
    answered = RememberedPages()

    def perform_authentication(self, request):
        # With TOKEN_CACHE=shared the token's check needs this request's epoch: the page's
        # statement reads it, and the page is answered only if the token is then accepted.
        self.paginator.read_ahead(self.catalogue, request)
        super().perform_authentication(request)

    def list(self, request, *args, **kwargs):
        rows = self.paginator.paginate_rows(self.catalogue, request)
        return self.answered.response(self.paginator, rows, ProductSerializer)


@extend_schema_view(
    get=extend_schema(
        summary="One product",
        description="Needs the `products:read` scope.",
        parameters=ERROR_HEADERS,
        responses=api_responses({200: ProductSerializer, 404: NOT_FOUND}),
    )
)
class ProductDetail(NotStoredMixin, BareOptionsAPIMixin, generics.RetrieveAPIView):
    queryset = Product.objects.all()
    serializer_class = ProductSerializer
    required_scopes = ["products:read"]


class OwnOrdersMixin:
    """A client sees only its own orders: any other order is simply not there (404)."""

    def get_queryset(self):
        client = self.request.auth.application
        return Order.objects.filter(client=client).prefetch_related("lines__product")


@extend_schema_view(
    get=extend_schema(
        summary="Your orders",
        description="The orders the calling client placed, newest first. Needs `orders:read`.",
        parameters=ERROR_HEADERS,
        responses=api_responses({200: OrderSerializer(many=True), 400: BAD_PAGE, 404: NO_SUCH_PAGE}),
    ),
    post=extend_schema(
        summary="Place an order",
        description="Needs `orders:write`. Prices are today's catalogue prices.",
        request=NewOrderSerializer,
        parameters=[ORDER_LOCATION, *ERROR_HEADERS],
        responses=api_responses({201: OrderSerializer, 400: NOT_AN_ORDER, 408: TIMED_OUT, 415: NOT_JSON}),
    ),
)
class OrderList(NotStoredMixin, BareOptionsAPIMixin, OwnOrdersMixin, generics.ListCreateAPIView):
    serializer_class = OrderSerializer
    pagination_class = Pages
    required_scopes_by_method = {"GET": ["orders:read"], "POST": ["orders:write"]}

    def create(self, request, *args, **kwargs):
        order_request = NewOrderSerializer(data=request.data)
        order_request.is_valid(raise_exception=True)
        lines = [services.LineRequest(**line) for line in order_request.validated_data["lines"]]
        try:
            order = services.place_order(client=request.auth.application, lines=lines)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict) from error
        location = reverse("fooapi:order-detail", kwargs={"pk": order.pk})
        return Response(
            OrderSerializer(order).data, status=status.HTTP_201_CREATED, headers={"Location": location}
        )


@extend_schema_view(
    get=extend_schema(
        summary="One of your orders",
        description="Needs `orders:read`. Another client's order is a 404.",
        parameters=ERROR_HEADERS,
        responses=api_responses({200: OrderSerializer, 404: NOT_FOUND}),
    )
)
class OrderDetail(NotStoredMixin, BareOptionsAPIMixin, OwnOrdersMixin, generics.RetrieveAPIView):
    serializer_class = OrderSerializer
    required_scopes_by_method = {"GET": ["orders:read"]}


class SchemaView(BareOptionsAPIMixin, SpectacularAPIView):
    """GET /api/v1/schema: the OpenAPI 3 description, JSON unless YAML is asked for
    (`Accept: application/yaml` or `?format=yaml`)."""

    renderer_classes = [OpenApiJsonRenderer, OpenApiJsonRenderer2, OpenApiYamlRenderer, OpenApiYamlRenderer2]

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if response.exception:
            # An error (406 for the Accept header, 404 for `?format=`) is no OpenAPI document: JSON,
            # as every other error of the API, not a body labelled application/vnd.oai.openapi+json.
            response.accepted_renderer = JSONRenderer()
            response.accepted_media_type = JSONRenderer.media_type
        return response


class DocsView(ReadOnlyEndpointMixin, TemplateView):
    """GET /api/v1/docs: the API reference, rendered in the browser from the schema. It takes no
    form: any other method is a 405 with Allow, not the CSRF check's 403."""

    template_name = "fooapi/docs.html"
    http_method_names = ["get", "head", "options"]

    def get_context_data(self, **kwargs):
        return super().get_context_data(api_base_url=f"{settings.ISSUER}/api/v1", **kwargs)
