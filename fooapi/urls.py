from django.urls import include, path

from fooapi import views

app_name = "fooapi"
PREFIX = "api/v1/"  # where config/urls.py includes these

resources = [
    ("products", views.ProductList, "product-list"),
    ("products/<int:pk>", views.ProductDetail, "product-detail"),
    ("orders", views.OrderList, "order-list"),
    ("orders/<int:pk>", views.OrderDetail, "order-detail"),
]
# The canonical paths (no trailing slash): the ones the OpenAPI schema describes.
resource_patterns = [path(route, view.as_view(), name=name) for route, view, name in resources]
# The other form answers too: never a redirect that would turn a POST into a GET.
slash_patterns = [path(f"{route}/", view.as_view()) for route, view, _ in resources]

# What the OpenAPI schema describes (fooapi.schema.FooApiSchemaGenerator).
schema_patterns = [path(PREFIX, include(resource_patterns))]
schema_view = views.SchemaView.as_view()

urlpatterns = [
    *resource_patterns,
    *slash_patterns,
    path("schema", schema_view, name="schema"),
    path("schema/", schema_view),
    path("docs", views.DocsView.as_view(), name="docs"),
    path("docs/", views.DocsView.as_view()),
]
