"""Small things many tests need: clients, credentials, tokens."""

import base64
import hashlib
import io
from urllib.parse import quote_plus, urlencode

from django.test import Client
from oauth2_provider.models import get_access_token_model

from authserver import services

FORM = "application/x-www-form-urlencoded"


class HttpsClient(Client):
    """Django's test client over HTTPS (the server redirects plain HTTP when TLS is on)."""

    def generic(self, *args, secure=True, **kwargs):
        return super().generic(*args, secure=True, **kwargs)


def make_client(
    *, scopes=("products:read", "orders:read"), name="test client", **options
) -> services.NewClient:
    return services.register_client(name=name, scopes=list(scopes), actor="tests", **options)


def basic(client_id: str, client_secret: str) -> dict:
    """An Authorization header with client_secret_basic (RFC 6749 2.3.1: form-encoded, then base64)."""
    credentials = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(credentials).decode()}


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def form(pairs) -> str:
    """A form body; `pairs` is a dict or a list of (name, value), so parameters can repeat."""
    return urlencode(pairs, doseq=True)


# Parameters sent without a value beside a token to revoke or introspect, each treated as omitted
# (RFC 6749 3.2): no second token or hint, no client_secret beside Basic.
EMPTY_VALUES_BESIDE_A_TOKEN = [
    [("token", "")],
    [("token_type_hint", "")],
    [("token_type_hint", "access_token"), ("token_type_hint", "")],
    [("client_secret", "")],
    [("client_id", "")],
]


def post_form(http, path: str, pairs, **headers):
    return http.post(path, form(pairs), content_type=FORM, **headers)


def request_token(http, new_client: services.NewClient, **params):
    """POST /oauth2/token with client_secret_basic through Django's test client."""
    credentials = basic(new_client.application.client_id, new_client.client_secret)
    return post_form(http, "/oauth2/token", {"grant_type": "client_credentials", **params}, **credentials)


def issue_token(http, new_client: services.NewClient, **form) -> str:
    response = request_token(http, new_client, **form)
    assert response.status_code == 200, response.content
    return response.json()["access_token"]


def stored_token(token: str):
    """The AccessToken row of an issued token (stored by its SHA-256 checksum, not in clear)."""
    checksum = hashlib.sha256(token.encode()).hexdigest()
    return get_access_token_model().objects.get(token_checksum=checksum)


class Terminal(io.StringIO):
    """A command's stderr that says it is a terminal (where progress bars are drawn)."""

    def isatty(self) -> bool:
        return True
