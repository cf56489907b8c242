"""What the authorization server does, one function per business action.

The admin, the management commands, the registration endpoint, the OAuth validator and the SDK
portal all call these; none of them writes clients, secrets, tokens or audit events by hand.
"""

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import get_access_token_model, revoke_access_token, set_token_value
from oauth2_provider.settings import oauth2_settings

from authserver.models import Application, AuditEvent, Scope

AccessToken = get_access_token_model()

# Seeded by `manage.py bootstrap`; after that, scopes are data edited in the admin.
SEED_SCOPES = [
    # name, description, sandbox, public
    ("products:read", "Read the product catalogue", True, True),
    ("orders:read", "Read your orders", True, True),
    ("orders:write", "Place orders", False, True),
    ("introspection", "Introspect access tokens (for resource servers)", False, False),
    ("registration", "Register clients dynamically (initial access tokens)", False, False),
]


@dataclass(frozen=True)
class NewClient:
    """A client just registered; `client_secret` is the only copy of the secret there will ever be."""

    application: Application
    client_secret: str


def record_event(
    *,
    kind: str,
    actor: str,
    application: Application | None = None,
    client_id: str = "",
    remote_addr: str | None = None,
    detail: dict | None = None,
) -> AuditEvent:
    return AuditEvent.objects.create(
        kind=kind,
        application=application,
        client_id=client_id or (application.client_id if application else ""),
        actor=actor,
        remote_addr=remote_addr or None,
        detail=detail or {},
    )


def ensure_default_scopes() -> None:
    for name, description, sandbox, public in SEED_SCOPES:
        Scope.objects.get_or_create(
            name=name, defaults={"description": description, "sandbox": sandbox, "public": public}
        )


def find_client(client_id: str) -> Application | None:
    if not client_id:
        return None
    try:
        return Application.objects.filter(client_id=client_id).first()
    except ValueError:  # e.g. a NUL byte, which PostgreSQL cannot even compare
        return None


def scopes_named(names: Collection[str]) -> list[Scope]:
    wanted = set(names)
    scopes = list(Scope.objects.filter(name__in=wanted))
    unknown = wanted - {scope.name for scope in scopes}
    if unknown:
        raise ValidationError({"allowed_scopes": f"Unknown scope: {', '.join(sorted(unknown))}."})
    return scopes


@transaction.atomic
def register_client(
    *,
    name: str,
    scopes: Collection[str],
    actor: str,
    owner=None,
    access_token_lifetime: int | None = None,
    enabled: bool = True,
    registration_source: str = Application.RegistrationSource.MANUAL,
    remote_addr: str | None = None,
) -> NewClient:
    """A confidential client-credentials client; the server generates its id and secret."""
    client_secret = generate_client_secret()
    application = Application(
        name=name,
        user=owner,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        client_secret=client_secret,
        access_token_lifetime=access_token_lifetime,
        enabled=enabled,
        registration_source=registration_source,
    )
    application.full_clean()
    application.save()  # DOT's ClientSecretField stores the hash (CLIENT_SECRET_HASHER)
    granted = scopes_named(scopes)
    application.allowed_scopes.set(granted)
    record_event(
        kind=AuditEvent.Kind.CLIENT_CREATED,
        application=application,
        actor=actor,
        remote_addr=remote_addr,
        detail={"name": name, "scope": " ".join(sorted(scope.name for scope in granted))},
    )
    return NewClient(application=application, client_secret=client_secret)


@transaction.atomic
def update_client(
    *,
    application: Application,
    actor: str,
    changed_fields: Collection[str],
    scopes: Collection[str] | None = None,
    remote_addr: str | None = None,
) -> Application:
    """Save changes already set on `application` (and its scopes, when given)."""
    application.full_clean()
    application.save()
    changes = sorted(changed_fields)
    if scopes is not None:
        before = set(application.allowed_scope_names)
        application.allowed_scopes.set(scopes_named(scopes))
        application.__dict__.pop("allowed_scope_names", None)
        if before != set(scopes):
            changes.append("allowed_scopes")
    if changes:
        record_event(
            kind=AuditEvent.Kind.CLIENT_CHANGED,
            application=application,
            actor=actor,
            remote_addr=remote_addr,
            detail={"changed": changes, "enabled": application.enabled},
        )
    return application


def set_client_enabled(
    *, application: Application, enabled: bool, actor: str, remote_addr=None
) -> Application:
    """Disabling takes effect at once: the token endpoint refuses the client and its tokens stop working."""
    application.enabled = enabled
    return update_client(
        application=application, actor=actor, changed_fields=["enabled"], remote_addr=remote_addr
    )


@transaction.atomic
def rotate_secret(*, application: Application, actor: str, remote_addr: str | None = None) -> str:
    """A new secret, returned once; the old one stops working when this commits."""
    client_secret = generate_client_secret()
    application.client_secret = client_secret
    application.save(update_fields=["client_secret", "updated"])
    record_event(
        kind=AuditEvent.Kind.SECRET_ROTATED, application=application, actor=actor, remote_addr=remote_addr
    )
    return client_secret


@transaction.atomic
def delete_client(*, application: Application, actor: str, remote_addr: str | None = None) -> None:
    record_event(
        kind=AuditEvent.Kind.CLIENT_DELETED,
        client_id=application.client_id,
        actor=actor,
        remote_addr=remote_addr,
        detail={"name": application.name},
    )
    application.delete()  # its tokens go with it (CASCADE)


@transaction.atomic
def revoke_token(*, token, actor: str, remote_addr: str | None = None) -> None:
    record_event(
        kind=AuditEvent.Kind.TOKEN_REVOKED,
        application=token.application,
        actor=actor,
        remote_addr=remote_addr,
        detail={"token_id": token.pk, "scope": token.scope},
    )
    revoke_access_token(token)


def revoke_presented_token(*, token: str, application: Application, actor: str, remote_addr=None) -> bool:
    """RFC 7009: revoke `token` if it is one of `application`'s own; anything else is quietly ignored."""
    checksum = hashlib.sha256(token.encode("utf-8")).hexdigest()
    stored = AccessToken.objects.filter(token_checksum=checksum, application=application).first()
    if stored is None:
        return False
    revoke_token(token=stored, actor=actor, remote_addr=remote_addr)
    return True


@transaction.atomic
def revoke_client_tokens(*, application: Application, actor: str, remote_addr: str | None = None) -> int:
    _, deleted = AccessToken.objects.filter(application=application).delete()
    revoked = deleted.get(AccessToken._meta.label, 0)
    record_event(
        kind=AuditEvent.Kind.TOKEN_REVOKED,
        application=application,
        actor=actor,
        remote_addr=remote_addr,
        detail={"all_tokens": True, "count": revoked},
    )
    return revoked


def issue_registration_token(*, application: Application) -> str:
    """An RFC 7592 registration access token: manages this one client's registration, nothing else."""
    raw_token = generate_client_secret()
    lifetime = oauth2_settings.DCR_REGISTRATION_TOKEN_EXPIRE_SECONDS
    expires = (
        datetime(9999, 12, 31, tzinfo=UTC)
        if lifetime is None
        else timezone.now() + timedelta(seconds=lifetime)
    )
    token = AccessToken(
        application=application, expires=expires, scope=oauth2_settings.DCR_REGISTRATION_SCOPE
    )
    set_token_value(token, raw_token)  # stored hashed (COMPLIANT_BCP_RFC9700_TOKEN_STORAGE)
    token.save()
    return raw_token


def introspect_token(token: str) -> dict:
    """RFC 7662 2.2: the token's metadata while it is active, `{"active": false}` alone otherwise."""
    checksum = hashlib.sha256(token.encode("utf-8")).hexdigest()
    stored = AccessToken.objects.select_related("application").filter(token_checksum=checksum).first()
    if (
        stored is None
        or not stored.is_valid()
        or stored.application is None
        or not stored.application.enabled
    ):
        return {"active": False}
    return {
        "active": True,
        "scope": stored.scope,
        "client_id": stored.application.client_id,
        "token_type": "Bearer",
        "exp": int(stored.expires.timestamp()),
        "iat": int(stored.created.timestamp()),
        "iss": settings.ISSUER,
    }
