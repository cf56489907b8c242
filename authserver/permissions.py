"""Which scopes a request needs (DRF permission classes)."""

from rest_framework.permissions import BasePermission

from authserver.errors import InsufficientScope


class TokenHasRequiredScopes(BasePermission):
    """The credential carries every scope the view requires for this method.

    A view names `required_scopes` (all methods) or `required_scopes_by_method` ({"GET": [...]}).
    The credential is an access token or, for client-authenticated endpoints, the client itself:
    both answer `allow_scopes(scopes)`. Missing credentials are a 401; too few scopes a 403 that
    names the scope needed (RFC 6750 3.1).
    """

    def has_permission(self, request, view) -> bool:
        credential = request.auth
        if credential is None:
            return False
        required = self.required_scopes(request, view)
        if not credential.allow_scopes(required):
            raise InsufficientScope(required)
        return True

    @staticmethod
    def required_scopes(request, view) -> list[str]:
        by_method = getattr(view, "required_scopes_by_method", None)
        if by_method is not None:
            method = "GET" if request.method == "HEAD" else request.method
            return by_method.get(method, [])
        return view.required_scopes
