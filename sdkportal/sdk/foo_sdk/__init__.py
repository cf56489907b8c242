"""foo_sdk: a Python client of the Foo API.

from foo_sdk import FooClient
client = FooClient.from_credentials_file("foo-credentials.json")
for product in client.list_products():
    print(product["name"], product["price"])
"""

from .client import FooClient
from .errors import (
    FooApiError,
    FooAuthError,
    FooConfigurationError,
    FooConnectionError,
    FooError,
    FooScopeError,
)

__version__ = "1.2.1"

__all__ = [
    "FooApiError",
    "FooAuthError",
    "FooClient",
    "FooConfigurationError",
    "FooConnectionError",
    "FooError",
    "FooScopeError",
    "__version__",
]
