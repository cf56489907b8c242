"""What can go wrong when calling the Foo API, as exceptions a program can catch."""


class FooError(Exception):
    """Base class of every error the SDK raises."""


class FooConnectionError(FooError):
    """The server could not be reached, or its TLS certificate could not be verified."""


class FooApiError(FooError):
    """The server answered with an error (RFC 6749 / RFC 6750 JSON error body).

    `status` is the HTTP status, `error` the error code (e.g. `invalid_request`, `not_found`),
    `description` the server's explanation, `retry_after` the seconds the server asked to wait
    before trying again (429, 503), else None.
    """

    def __init__(self, status: int, error: str, description: str = "", *, retry_after: float | None = None):
        self.status = status
        self.error = error
        self.description = description
        self.retry_after = retry_after
        super().__init__(f"{status} {error}" + (f": {description}" if description else ""))

    def __reduce__(self):
        # Pickled by its fields (multiprocessing, task queues): Exception's default passes the
        # message alone back to __init__, which needs status and error.
        return type(self), (self.status, self.error, self.description), self.__dict__


class FooAuthError(FooApiError):
    """The client could not authenticate: wrong client id or secret at the token endpoint, or an
    access token the API does not accept (`invalid_client`, `invalid_token`, ...)."""


class FooScopeError(FooApiError):
    """The access token is valid but lacks a scope the operation needs; `scope` names it."""

    def __init__(self, status: int, error: str, description: str = "", *, scope: str = ""):
        self.scope = scope
        super().__init__(status, error, description)

    def __str__(self) -> str:
        return f"missing scope {self.scope!r}: {self.description or 'insufficient_scope'}"


class FooConfigurationError(FooError):
    """The client is missing a setting (client id, secret, URLs) or was given an unsafe one."""
