"""The request kinds the benchmark measures, described once for wrk, the Python generator,
the in-process query counter and the profiler."""

import base64
from dataclasses import dataclass
from urllib.parse import quote_plus, urlencode

FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class RequestKind:
    name: str
    label: str
    method: str
    path: str
    body: str = ""
    authorization: str = ""

    def send_with(self, http):
        """Send this request through Django's test client (in-process)."""
        headers = {"HTTP_AUTHORIZATION": self.authorization} if self.authorization else {}
        if self.method == "POST":
            return http.post(self.path, self.body, content_type=FORM, **headers)
        return http.get(self.path, **headers)


def basic(client_id: str, client_secret: str) -> str:
    """client_secret_basic (RFC 6749 2.3.1: form-encoded, then base64)."""
    credentials = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(credentials).decode()


def request_kinds(credentials: dict) -> list[RequestKind]:
    """floor, token, introspect, products: `credentials` holds the clients and token run.py made."""
    token_client = credentials["token_client"]
    resource_server = credentials["resource_server"]
    return [
        RequestKind("floor", "GET /healthz (floor)", "GET", "/healthz"),
        RequestKind(
            "token",
            "POST /oauth2/token",
            "POST",
            "/oauth2/token",
            body=urlencode({"grant_type": "client_credentials"}),
            authorization=basic(token_client["client_id"], token_client["client_secret"]),
        ),
        RequestKind(
            "introspect",
            "POST /oauth2/introspect",
            "POST",
            "/oauth2/introspect",
            body=urlencode({"token": credentials["access_token"]}),
            authorization=basic(resource_server["client_id"], resource_server["client_secret"]),
        ),
        RequestKind(
            "products",
            "GET /api/v1/products",
            "GET",
            "/api/v1/products",
            authorization=f"Bearer {credentials['access_token']}",
        ),
    ]
