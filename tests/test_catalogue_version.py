"""A worker answers a catalogue page it has read before while the catalogue's version is unchanged
(fooapi.models.CatalogueVersion, hotpath.CompiledPages): the database changes the version in the
transaction of every change to the products, however it is made, so no answer is ever older than
the last committed change, in this worker, in another one, or in every worker of a live server."""

import secrets
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from authserver import validity
from fooapi.models import CatalogueVersion, Order, OrderLine, Product
from fooapi.services import seed_demo_catalogue
from fooapi.views import ProductList
from tests.helpers import HttpsClient, bearer, issue_token, make_client
from tests.servers import LiveServer, catalogue_answers
from tests.test_foo_api import drf_list_view_answer
from tests.test_remembered_tokens import in_another_worker


def version() -> int | None:
    row = CatalogueVersion.objects.filter(pk=CatalogueVersion.ROW).first()
    return None if row is None else row.value


@pytest.fixture
def committed(settings, transactional_db):
    """Outside a test transaction (so that changes commit and pages are remembered), with the
    shared epoch, the version's row and the catalogue as a migrated database has them after the
    last test emptied the tables; no page remembered."""
    settings.TOKEN_CACHE = "shared"
    validity.current()
    CatalogueVersion.objects.get_or_create(
        pk=CatalogueVersion.ROW, defaults={"value": secrets.randbelow(2**62)}
    )
    seed_demo_catalogue()
    ProductList.catalogue.forget()
    yield
    ProductList.catalogue.forget()


@pytest.fixture
def token(committed) -> str:
    return issue_token(HttpsClient(), make_client(scopes=["products:read"]))


def get(token: str, path: str = "/api/v1/products") -> dict:
    response = HttpsClient().get(path, **bearer(token))
    assert response.status_code == 200, response.content
    return response.json()


def statements_of(token: str, path: str = "/api/v1/products") -> list[str]:
    """The SQL one catalogue request runs, its answer checked against DRF's own list view."""
    with CaptureQueriesContext(connection) as captured:
        answered = get(token, path)
    assert answered == drf_list_view_answer(path)
    return [query["sql"] for query in captured.captured_queries]


def reads_products(statements: list[str]) -> bool:
    return any(Product._meta.db_table in sql for sql in statements)


def test_a_page_read_once_is_answered_from_one_statement_of_the_epoch_and_the_version(token):
    get(token, f"/api/v1/products/{camera().pk}")  # the worker looks the token and the scopes up
    first = statements_of(token)
    again = statements_of(token)

    assert len(first) == 1 and reads_products(first)
    assert len(again) == 1 and not reads_products(again)
    assert CatalogueVersion._meta.db_table in again[0] and "authserver_validityepoch" in again[0]
    # Each page and page size is remembered for itself.
    assert reads_products(statements_of(token, "/api/v1/products?page_size=3"))
    assert not reads_products(statements_of(token, "/api/v1/products?page_size=3"))
    assert not reads_products(statements_of(token))
    # A middle page, with both links, as DRF's list view answers it (statements_of compares).
    assert reads_products(statements_of(token, "/api/v1/products?page=2&page_size=3"))
    assert not reads_products(statements_of(token, "/api/v1/products?page=2&page_size=3"))


def camera() -> Product:
    return Product.objects.get(sku="FOO-CAM-01")


def change_with_save():
    product = camera()
    product.price = Decimal("79.00")
    product.save()


def change_with_update():
    Product.objects.filter(sku="FOO-CAM-01").update(available=False)


def change_with_raw_sql():
    with connection.cursor() as cursor:
        table = Product._meta.db_table
        cursor.execute(f"UPDATE {table} SET name = %s WHERE sku = %s", ["Cam", "FOO-CAM-01"])  # noqa: S608


def change_with_create():
    Product.objects.create(sku="FOO-NEW", name="New", price=Decimal("1.00"))


def change_with_bulk_create():
    Product.objects.bulk_create(
        [Product(sku=f"FOO-BULK-{n}", name="Bulk", price=Decimal("2.00")) for n in (1, 2)]
    )


def change_with_delete():
    camera().delete()


def change_with_queryset_delete():
    Product.objects.filter(available=True).delete()


@pytest.mark.parametrize(
    "change",
    [
        change_with_save,
        change_with_update,
        change_with_raw_sql,
        change_with_create,
        change_with_bulk_create,
        change_with_delete,
        change_with_queryset_delete,
    ],
)
def test_every_kind_of_change_to_the_products_is_answered_at_once(token, change):
    before = version()
    remembered = get(token)
    assert not reads_products(statements_of(token))

    change()

    assert version() != before
    changed = statements_of(token)  # its answer is DRF's, read now
    assert reads_products(changed) and get(token) != remembered
    assert not reads_products(statements_of(token))  # and remembered again


def test_a_change_committed_by_another_worker_is_answered_at_once(token):
    remembered = get(token)

    in_another_worker(change_with_save)

    answered = get(token)
    assert answered != remembered
    assert {item["sku"]: item["price"] for item in answered["results"]}["FOO-CAM-01"] == "79.00"


def test_an_order_changes_no_product_and_forgets_no_page(token):
    before = version()
    get(token)
    order = Order.objects.create(client=make_client().application, currency="EUR", total=Decimal("89.00"))
    OrderLine.objects.create(order=order, product=camera(), quantity=1, unit_price=Decimal("89.00"))

    assert version() == before
    assert not reads_products(statements_of(token))


def test_a_page_read_in_a_transaction_is_not_remembered(token):
    original = get(token)

    class RolledBack(Exception):
        """Ends the transaction with a rollback."""

    remembered = dict(ProductList.catalogue._remembered)
    with pytest.raises(RolledBack), transaction.atomic():
        change_with_save()
        assert get(token) != original  # the transaction's own change, read in it
        assert ProductList.catalogue._remembered == remembered
        raise RolledBack

    assert get(token) == original
    product = camera()
    product.price = Decimal("59.00")
    product.save()
    assert get(token) == drf_list_view_answer("/api/v1/products")
    assert {item["sku"]: item["price"] for item in get(token)["results"]}["FOO-CAM-01"] == "59.00"


def test_without_the_versions_row_every_page_is_read_and_none_remembered(token):
    CatalogueVersion.objects.all().delete()  # as `manage.py flush` leaves the table

    assert reads_products(statements_of(token)) and reads_products(statements_of(token))
    change_with_save()
    assert {item["sku"]: item["price"] for item in get(token)["results"]}["FOO-CAM-01"] == "79.00"


def test_a_worker_remembers_a_bounded_number_of_pages(token, monkeypatch):
    monkeypatch.setattr(ProductList.catalogue, "remember", 2)
    for size in (1, 2, 3):
        statements_of(token, f"/api/v1/products?page_size={size}")
        assert len(ProductList.catalogue._remembered) <= 2

    assert reads_products(statements_of(token, "/api/v1/products?page_size=1"))  # the oldest, forgotten
    assert not reads_products(statements_of(token, "/api/v1/products?page_size=3"))


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_truncating_the_products_changes_the_version(committed):
    before = version()

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {Product._meta.db_table} CASCADE")

    assert version() != before


# --- every worker of a live server ---------------------------------------------------------------


@pytest.fixture
def server(django_db_setup, django_db_blocker, committed):
    with django_db_blocker.unblock(), LiveServer(workers=2) as live:
        yield live


def prices(server, token: str) -> set[str]:
    """The camera's prices in catalogue answers from 8 threads at once: served by both workers."""
    answers = catalogue_answers(server, token)
    assert {answer.status_code for answer in answers} == {200}
    return {
        {item["sku"]: item["price"] for item in answer.json()["results"]}["FOO-CAM-01"] for answer in answers
    }


@pytest.mark.live
def test_every_worker_answers_a_change_at_once(server, token):
    assert prices(server, token) == {"89.00"}  # every worker has read and remembers the page

    change_with_save()

    assert prices(server, token) == {"79.00"}
    Product.objects.filter(sku="FOO-CAM-01").update(price=Decimal("69.00"))
    assert prices(server, token) == {"69.00"}
