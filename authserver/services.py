"""What the authorization server does, one function per business action.

The admin, the management commands, the registration endpoint, the OAuth validator and the SDK
portal all call these; none of them writes clients, secrets, tokens or audit events by hand.
"""

import functools
import hashlib
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.db import connections, router, transaction
from django.db.models import QuerySet
from django.utils import timezone
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import (
    get_access_token_model,
    get_refresh_token_model,
    set_token_value,
)
from oauth2_provider.oauth2_backends import get_oauthlib_core
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import Request as OauthlibRequest
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from authserver import hotpath, validity
from authserver.backends import users_named
from authserver.models import Application, AuditEvent, ClientScope, Scope

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


def changes_validity(service: Callable) -> Callable:
    """A service whose transaction can make tokens or clients invalid: atomic, and it takes the
    validity epoch before anything else (authserver/validity.py; with TOKEN_CACHE=shared a row
    lock). Every such transaction then locks the epoch first, so two of them never wait for each
    other's rows in opposite orders (a client deleted while an operator saves it). Only a user's
    row, which the portal and the console lock before the epoch, comes first (delete_user)."""

    @functools.wraps(service)
    @transaction.atomic
    def in_a_transaction(*args, **kwargs):
        validity.tokens_or_clients_changed()
        return service(*args, **kwargs)

    return in_a_transaction


@dataclass(frozen=True)
class NewClient:
    """A client just registered; `client_secret` is the only copy of the secret there will ever be."""

    application: Application
    client_secret: str


def record_event(**what) -> AuditEvent:
    """Write one audit event (see audit_event for what it holds)."""
    return hotpath.insert_audit_event(audit_event(**what))


def audit_event(
    *,
    kind: str,
    actor: str,
    application: Application | None = None,
    client_id: str = "",
    remote_addr: str | None = None,
    detail: dict | None = None,
) -> AuditEvent:
    """An audit event, not saved yet. Text a client supplied (a presented client id) is stored as
    given, except NUL characters, which PostgreSQL cannot store, and cut to the column's length."""
    client_id = client_id or (application.client_id if application else "")
    return AuditEvent(
        kind=kind,
        application=application,
        client_id=client_id.replace("\x00", "")[:255],
        actor=actor.replace("\x00", "")[:255],
        remote_addr=remote_addr or None,
        detail=detail or {},
    )


def ensure_default_scopes() -> list[str]:
    """Create the seed scopes that are missing, except one an operator deleted or renamed (the audit
    trail says so): bootstrap runs before every `make run`, and scopes are the operator's data once
    seeded. One that exists is never changed. The names created."""
    events = AuditEvent.objects
    deleted = events.filter(kind=AuditEvent.Kind.SCOPE_DELETED).values_list("detail__scope", flat=True)
    renamed = events.filter(kind=AuditEvent.Kind.SCOPE_CHANGED, detail__has_key="renamed_from")
    withdrawn = {*deleted, *renamed.values_list("detail__renamed_from", flat=True)}
    created = []
    for name, description, sandbox, public in SEED_SCOPES:
        if name in withdrawn:
            continue
        _, new = Scope.objects.get_or_create(
            name=name, defaults={"description": description, "sandbox": sandbox, "public": public}
        )
        if new:
            created.append(name)
    return created


def find_client(client_id: str) -> Application | None:
    if not client_id or "\x00" in client_id:  # no client id has NUL; PostgreSQL cannot compare one
        return None
    return Application.objects.filter(client_id=client_id).first()


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
    authorization_grant_type: str = Application.GRANT_CLIENT_CREDENTIALS,
    redirect_uris: str = "",
    token_endpoint_auth_method: str = Application.TokenEndpointAuthMethod.CLIENT_SECRET_BASIC,
    form_id: str = "",
) -> NewClient:
    """A confidential client (client credentials unless told otherwise); the server generates its id
    and secret. `form_id`, the console form that asked for it, goes into the audit event, where
    registered_with_form finds it."""
    client_secret = generate_client_secret()
    application = Application(
        name=name,
        user=owner,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=authorization_grant_type,
        redirect_uris=redirect_uris,
        client_secret=client_secret,
        access_token_lifetime=access_token_lifetime,
        enabled=enabled,
        registration_source=registration_source,
        token_endpoint_auth_method=token_endpoint_auth_method,
    )
    application.full_clean()
    application.save()  # DOT's ClientSecretField stores the hash (CLIENT_SECRET_HASHER)
    granted = scopes_named(scopes)
    # Rows of its own, not allowed_scopes.set(): m2m_changed would change the validity epoch, and
    # every worker would forget what it remembers, for a client none of them can remember yet.
    ClientScope.objects.bulk_create(ClientScope(application=application, scope=scope) for scope in granted)
    record_event(
        kind=AuditEvent.Kind.CLIENT_CREATED,
        application=application,
        actor=actor,
        remote_addr=remote_addr,
        detail={
            "name": name,
            "owner": owner.get_username() if owner else None,
            "access_token_lifetime": access_token_lifetime,
            "grant_type": authorization_grant_type,
            "token_endpoint_auth_method": token_endpoint_auth_method,
            "enabled": enabled,
            "scope": " ".join(sorted(scope.name for scope in granted)),
            **({"form_id": form_id} if form_id else {}),
        },
    )
    return NewClient(application=application, client_secret=client_secret)


def registered_with_form(*, actor: str, form_id: str) -> AuditEvent | None:
    """The client_created event of the client `actor` registered with this form (register_client's
    form_id), if any; its application is None once that client is deleted."""
    return (
        AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_CREATED, actor=actor, detail__form_id=form_id)
        .select_related("application")
        .first()
    )


@changes_validity
def update_client(
    *,
    application: Application,
    actor: str,
    changed_fields: Collection[str],
    scopes: Collection[str] | None = None,
    grantable_scopes: Collection[str] | None = None,
    remote_addr: str | None = None,
) -> Application:
    """Save changes already set on `application` (and its scopes, when given). With
    `grantable_scopes`, `scopes` may add only those; others it may only keep, as the client holds
    them now (ValidationError). A client deleted since it was read raises Application.DoesNotExist.
    The audit event records each changed setting's old and new value ("from", "to"), "enabled" as
    it is now (with "enabled" changed, it was the other)."""
    application.full_clean()
    # As stored, under the epoch's lock: the values this change replaces.
    stored = Application.objects.select_related("user").filter(pk=application.pk).first()
    # A client deleted meanwhile stays deleted: save() would INSERT it again, old secret and all.
    if stored is None:
        raise Application.DoesNotExist(f"The client {application.client_id} was deleted.")
    if scopes is not None:
        # The scopes as held now, under the epoch's lock, not as the caller read the client: a scope
        # an operator granted or took meanwhile is then withdrawn from the tokens, or not given back.
        application.__dict__.pop("allowed_scope_names", None)
        before = set(application.allowed_scope_names)
        refused = set() if grantable_scopes is None else set(scopes) - before - set(grantable_scopes)
        if refused:
            raise ValidationError({"scope": f"This client may not be granted: {' '.join(sorted(refused))}."})
    # Only what this change sets: a field another change set since `application` was read (an
    # operator disabling the client while its registration is updated) keeps that change.
    application.save(update_fields=[*changed_fields, "updated"])
    changes = sorted(changed_fields)
    detail = {}
    if settings_before := _client_settings(stored, changes):
        detail |= {"from": settings_before, "to": _client_settings(application, changes)}
    if scopes is not None:
        application.allowed_scopes.set(scopes_named(scopes))
        application.__dict__.pop("allowed_scope_names", None)
        if before != set(scopes):
            changes.append("allowed_scopes")
        granted = set(application.allowed_scope_names) - before
        if granted:
            detail["granted"] = sorted(granted)
        withdrawn = before - set(application.allowed_scope_names)
        if withdrawn:
            detail |= {"withdrawn": sorted(withdrawn), "tokens_narrowed": _withdraw(application, withdrawn)}
    if changes:
        record_event(
            kind=AuditEvent.Kind.CLIENT_CHANGED,
            application=application,
            actor=actor,
            remote_addr=remote_addr,
            detail={"changed": changes, "enabled": application.enabled, **detail},
        )
    return application


# Never in the trail, not even hashed; "enabled" is in every client_changed event already.
NOT_RECORDED_SETTINGS = {"client_secret", "enabled"}


def _client_settings(application: Application, fields: Collection[str]) -> dict:
    """The values of a client's settings `fields` as the audit trail keeps them (its owner by username)."""
    values = {}
    for field in fields:
        if field in NOT_RECORDED_SETTINGS:
            continue
        value = getattr(application, field)
        if field == "user":
            value = value.get_username() if value is not None else None
        values[field] = value if value is None or isinstance(value, (str, int, float)) else str(value)
    return values


def _withdraw(application: Application, withdrawn: set[str]) -> int:
    """Take scopes a client no longer holds out of its tokens at once (the epoch, taken by the
    caller, makes every worker read them again): a token left with no scope is revoked. Other
    scopes a token carries (a registration access token's) stay. How many tokens changed."""
    tokens = AccessToken.objects.filter(application=application)
    changed = 0
    # Per distinct scope string: a client's tokens carry a handful, whatever their number.
    for scope in tokens.values_list("scope", flat=True).distinct().order_by():
        names = scope.split()
        if not withdrawn.intersection(names):
            continue
        remaining = " ".join(name for name in names if name not in withdrawn)
        holding = tokens.filter(scope=scope)
        if remaining:
            changed += holding.update(scope=remaining)
        else:
            changed += holding.delete()[1].get(AccessToken._meta.label, 0)
    return changed


def set_client_enabled(
    *, application: Application, enabled: bool, actor: str, remote_addr=None
) -> Application:
    """Disabling takes effect at once: the token endpoint refuses the client and its tokens stop working."""
    application.enabled = enabled
    return update_client(
        application=application, actor=actor, changed_fields=["enabled"], remote_addr=remote_addr
    )


@changes_validity
def rotate_secret(
    *, application: Application, actor: str, remote_addr: str | None = None, form_id: str = ""
) -> str:
    """A new secret, returned once; the old one stops working when this commits. `form_id`, the
    console's or portal's form that asked for it, goes into the audit event, where
    rotated_with_form finds it."""
    client_secret = generate_client_secret()
    application.client_secret = client_secret
    application.save(update_fields=["client_secret", "updated"])
    record_event(
        kind=AuditEvent.Kind.SECRET_ROTATED,
        application=application,
        actor=actor,
        remote_addr=remote_addr,
        detail={"form_id": form_id} if form_id else None,
    )
    return client_secret


def rotated_with_form(*, actor: str, form_id: str) -> AuditEvent | None:
    """The secret_rotated event of the rotation `actor` asked for with this form (rotate_secret's
    form_id), if any: the same form posted again (a reload of the page that showed the new secret)
    must not rotate it a second time."""
    return AuditEvent.objects.filter(
        kind=AuditEvent.Kind.SECRET_ROTATED, actor=actor, detail__form_id=form_id
    ).first()


@changes_validity
def delete_client(*, application: Application, actor: str, remote_addr: str | None = None) -> bool:
    """Delete the client, its tokens with it (CASCADE), audited. Whether it deleted it: False for a
    client deleted since it was read (the two DELETEs of a client retrying, an operator's beside
    the client's own), with no event of this call's: the deletion that came first has its own."""
    # As stored, under the epoch's lock: the name a rename committed since it was read gave it.
    name = Application.objects.filter(pk=application.pk).values_list("name", flat=True).first()
    if name is None:
        return False
    _, deleted = application.delete()
    if not deleted.get(Application._meta.label):  # deleted meanwhile without the epoch (local, off)
        return False
    record_event(
        kind=AuditEvent.Kind.CLIENT_DELETED,
        client_id=application.client_id,
        actor=actor,
        remote_addr=remote_addr,
        detail={"name": name},
    )
    return True


def lock_user(user) -> bool:
    """Inside a transaction: one action at a time by or on this user (a double click in the portal
    or the console, a developer deleted or deactivated during their portal action). A user's row is
    locked before the validity epoch (changes_validity), always in that order. Whether the user, as
    locked, still exists and is active (`user` may have been read before a change the lock waited
    for: an action by the user stops there)."""
    locked = get_user_model().objects.select_for_update().filter(pk=user.pk)
    return bool(locked.values_list("is_active", flat=True).first())


@transaction.atomic
def delete_user(*, user, actor: str, remote_addr: str | None = None) -> None:
    """Delete a user account, audited: each client it owns is deleted as delete_client deletes one
    (with its audit event), not by the database's cascade. The user's row is locked before the validity
    epoch, in the order of the portal's developer lock and the console's operator lock (each taken
    before the epoch): a developer's portal action and their deletion do not wait for each other
    (a deadlock)."""
    lock_user(user)
    validity.tokens_or_clients_changed()
    owned = list(Application.objects.filter(user=user).order_by("pk"))
    for application in owned:
        delete_client(application=application, actor=actor, remote_addr=remote_addr)
    record_event(
        kind=AuditEvent.Kind.USER_DELETED,
        actor=actor,
        remote_addr=remote_addr,
        detail={**_account(user), "clients_deleted": len(owned)},
    )
    user.delete()


@transaction.atomic
def set_user_active(*, user, active: bool, actor: str, remote_addr: str | None = None) -> int:
    """Activate or deactivate a user account, audited; returns how many clients it disabled
    (user_active_changed). Locked as delete_user is, the user's row before the validity epoch: a
    developer's portal action and their deactivation do not wait for each other (a deadlock)."""
    lock_user(user)
    # update(), not save(): the receivers that follow a save by any other path (authserver/signals.py)
    # would then do what follows a second time.
    get_user_model()._default_manager.filter(pk=user.pk).update(is_active=active)
    user.is_active = active
    return user_active_changed(user=user, active=active, actor=actor, remote_addr=remote_addr)


# Who deactivated or activated an account saved outside set_user_active (a shell, another form):
# nothing tells the save signal.
UNATTRIBUTED = "unattributed: account saved outside the console"


@transaction.atomic
def user_active_changed(*, user, active: bool, actor: str, remote_addr: str | None = None) -> int:
    """What follows a user account's activation or deactivation, whichever path saved it
    (set_user_active, or authserver/signals.py for any other), audited; returns how many clients it
    disabled. Deactivating disables every enabled client the user owns with set_client_enabled (each
    audited): their credentials and tokens stop with the account, not when someone remembers the
    clients. Activating enables none: an operator enables each client again, after review."""
    owned = []
    if not active:
        validity.tokens_or_clients_changed()
        # Read after the user's row was written (and so locked): a client the portal registered
        # for them a moment ago is in it; the portal registers none for them after (lock_user).
        owned = list(Application.objects.filter(user=user, enabled=True).order_by("pk"))
        for application in owned:
            set_client_enabled(application=application, enabled=False, actor=actor, remote_addr=remote_addr)
    record_event(
        kind=AuditEvent.Kind.USER_ACTIVATED if active else AuditEvent.Kind.USER_DEACTIVATED,
        actor=actor,
        remote_addr=remote_addr,
        detail={**_account(user), **({} if active else {"clients_disabled": len(owned)})},
    )
    return len(owned)


def _account(user) -> dict:
    """What an audit event keeps of a user account: it outlives a deleted one."""
    return {"user_id": user.pk, "username": user.get_username()}


def account_powers(user) -> dict:
    """What a user account may do in the console, as stored (read before a change is saved, to be
    compared with it after by user_saved): staff, superuser, its groups and its own permissions."""
    stored = get_user_model()._default_manager.get(pk=user.pk)
    return {
        "username": stored.get_username(),
        "is_staff": stored.is_staff,
        "is_superuser": stored.is_superuser,
        "groups": sorted(stored.groups.values_list("name", flat=True)),
        "user_permissions": _permission_names(stored.user_permissions.all()),
    }


def _permission_names(permissions: QuerySet) -> list[str]:
    """Permissions as the audit trail names them: "app_label.codename", sorted."""
    pairs = permissions.values_list("content_type__app_label", "codename")
    return sorted(f"{app_label}.{codename}" for app_label, codename in pairs)


def _names_added_and_removed(before: list[str], after: list[str], label: str) -> dict:
    """`{label}_added` and `{label}_removed`, each only when not empty: what an audit event names of
    a list of groups or permissions changed."""
    differences = {
        f"{label}_added": sorted(set(after) - set(before)),
        f"{label}_removed": sorted(set(before) - set(after)),
    }
    return {key: names for key, names in differences.items() if names}


@transaction.atomic
def user_saved(
    *,
    user,
    actor: str,
    before: dict | None = None,
    password_changed: bool = False,
    remote_addr: str | None = None,
) -> AuditEvent | None:
    """Record a user account created in the console (`before` None), or its console powers (staff,
    superuser, groups, own permissions: account_powers `before` the change), its username or its
    password changed, once saved. Activation goes through set_user_active. None when nothing
    recorded changed."""
    after = account_powers(user)
    if before is None:
        flags = {"is_staff": after["is_staff"], "is_superuser": after["is_superuser"]}
        return record_event(
            kind=AuditEvent.Kind.USER_CREATED,
            actor=actor,
            remote_addr=remote_addr,
            detail={**_account(user), **flags},
        )
    changed = [field for field in ("is_staff", "is_superuser") if before[field] != after[field]]
    detail = {}
    for field, label in (("groups", "groups"), ("user_permissions", "permissions")):
        if differences := _names_added_and_removed(before[field], after[field], label):
            changed.append(field)
            detail |= differences
    if before["username"] != after["username"]:
        changed.append("username")
        detail["renamed_from"] = before["username"]
    if password_changed:
        changed.append("password")
    if not changed:
        return None
    return record_event(
        kind=AuditEvent.Kind.USER_CHANGED,
        actor=actor,
        remote_addr=remote_addr,
        detail={
            **_account(user),
            "changed": changed,
            "is_staff": after["is_staff"],
            "is_superuser": after["is_superuser"],
            **detail,
        },
    )


def _group(group: Group) -> dict:
    """What an audit event keeps of a group: it outlives a deleted one. Its members' count: a change
    of its permissions changes each member's console rights."""
    members = get_user_model()._default_manager.filter(groups=group).count()
    return {"group_id": group.pk, "group": group.name, "members": members}


def group_rights(group: Group) -> dict:
    """Inside a transaction: a group's name and permissions as stored, its row locked until the
    change is saved (a second operator's change of it waits, then reads this one's), to be
    compared with them after by group_saved."""
    stored = Group.objects.select_for_update().get(pk=group.pk)
    return {"name": stored.name, "permissions": _permission_names(stored.permissions.all())}


@transaction.atomic
def group_saved(
    *, group: Group, actor: str, before: dict | None = None, remote_addr: str | None = None
) -> AuditEvent | None:
    """Record a group created in the console (`before` None), or renamed or its permissions given
    or taken (group_rights `before` the change), once saved with its permissions. None when
    nothing recorded changed."""
    after = group_rights(group)
    if before is None:
        return record_event(
            kind=AuditEvent.Kind.GROUP_CREATED,
            actor=actor,
            remote_addr=remote_addr,
            detail={**_group(group), "permissions": after["permissions"]},
        )
    changed, detail = [], {}
    if before["name"] != after["name"]:
        changed.append("name")
        detail["renamed_from"] = before["name"]
    if differences := _names_added_and_removed(before["permissions"], after["permissions"], "permissions"):
        changed.append("permissions")
        detail |= differences
    if not changed:
        return None
    return record_event(
        kind=AuditEvent.Kind.GROUP_CHANGED,
        actor=actor,
        remote_addr=remote_addr,
        detail={**_group(group), "changed": changed, **detail},
    )


@transaction.atomic
def delete_group(*, group: Group, actor: str, remote_addr: str | None = None) -> None:
    """Delete a group, audited with the permissions its members lose with it."""
    record_event(
        kind=AuditEvent.Kind.GROUP_DELETED,
        actor=actor,
        remote_addr=remote_addr,
        detail={**_group(group), "permissions": _permission_names(group.permissions.all())},
    )
    group.delete()


def account_named(presented_username: str):
    """The account a login's username names, in any case; None for none."""
    users = get_user_model()
    longest = users._meta.get_field(users.USERNAME_FIELD).max_length
    # What can be no username is not looked up (PostgreSQL cannot compare a NUL character).
    plausible = 0 < len(presented_username) <= longest and "\x00" not in presented_username
    return users_named(presented_username).first() if plausible else None


def record_console_login(
    *, presented_username: str, user=None, remote_addr: str | None = None, via: str | None = None
) -> AuditEvent:
    """A login to the management console (`user`, who logged in), or an attempt that failed (None:
    a wrong password, an account that is no staff, inactive or none). A failed attempt names the
    account only when the username presented is one's: what was typed may be a password, typed in
    the wrong box, and must not be kept. `via`: the login page, when it is not the console's."""
    where = {"via": via} if via else {}
    if user is None:
        named = account_named(presented_username)
        account = _account(named) if named is not None else {}
        return record_event(
            kind=AuditEvent.Kind.CONSOLE_LOGIN_FAILED,
            actor=f"user:{account['username']}" if account else "user:(no such account)",
            remote_addr=remote_addr,
            detail={**account, **where},
        )
    return record_event(
        kind=AuditEvent.Kind.CONSOLE_LOGIN,
        actor=f"user:{user.get_username()}",
        remote_addr=remote_addr,
        detail={**_account(user), **where},
    )


@changes_validity
def revoke_token(*, token, actor: str, remote_addr: str | None = None) -> bool:
    """Delete the token, audited. Whether it deleted it: False for a token revoked since it was read
    (a client's revocation beside an operator's, a retried request), with no event of this call's:
    the revocation that deleted it has its own. No refresh token is ever issued here (client
    credentials only), so none is left bound to it."""
    token_id, application = token.pk, token.application  # delete() sets the pk to None
    _, deleted = token.delete()
    if not deleted.get(AccessToken._meta.label):
        return False
    record_event(
        kind=AuditEvent.Kind.TOKEN_REVOKED,
        application=application,
        actor=actor,
        remote_addr=remote_addr,
        detail={"token_id": token_id, "scope": token.scope},
    )
    return True


class AnotherClientsToken(Exception):
    """A client presented a token issued to another client (RFC 7009 2.1: the request is refused)."""


def revoke_presented_token(*, token: str, application: Application, actor: str, remote_addr=None) -> bool:
    """RFC 7009: revoke `token` if it is one of `application`'s own. A token issued to another client
    is refused (AnotherClientsToken) and left as it is; one that is no token (unknown, already
    revoked, expired or cleaned up) is no error: there is nothing left to revoke (RFC 7009 2.2)."""
    checksum = hashlib.sha256(token.encode("utf-8")).hexdigest()
    stored = AccessToken.objects.filter(token_checksum=checksum).first()
    if stored is None or stored.is_expired():  # expired: as invalid as once cleared (the same answer)
        return False
    if stored.application_id != application.pk:
        raise AnotherClientsToken()
    return revoke_token(token=stored, actor=actor, remote_addr=remote_addr)


def access_tokens(*, among: QuerySet | None = None) -> QuerySet:
    """The access tokens among `among` (default: every stored token). A client's registration access
    token is stored as one (issue_registration_token) but is none: it is for the client's own
    registration alone, so it is not counted, listed or revoked as one of the client's tokens."""
    tokens = AccessToken.objects.all() if among is None else among
    return tokens.exclude(scope=oauth2_settings.DCR_REGISTRATION_SCOPE)


def is_registration_token(token) -> bool:
    """Whether a stored token is a registration access token (see access_tokens)."""
    return token.scope == oauth2_settings.DCR_REGISTRATION_SCOPE


@changes_validity
def revoke_client_tokens(*, application: Application, actor: str, remote_addr: str | None = None) -> int:
    """Revoke every access token of `application`; returns how many. Its registration access token
    stays (access_tokens): the client still manages its registration with it (RFC 7592)."""
    _, deleted = access_tokens().filter(application=application).delete()
    revoked = deleted.get(AccessToken._meta.label, 0)
    record_event(
        kind=AuditEvent.Kind.TOKEN_REVOKED,
        application=application,
        actor=actor,
        remote_addr=remote_addr,
        detail={"all_tokens": True, "count": revoked},
    )
    return revoked


def registration_token(*, application: Application):
    """`application`'s registration access token (RFC 7592) as stored (its metadata: the token
    itself is stored hashed), or None: a client registered dynamically has one until it is revoked."""
    return (
        AccessToken.objects.filter(application=application, scope=oauth2_settings.DCR_REGISTRATION_SCOPE)
        .order_by("-created", "-pk")
        .first()
    )


@changes_validity
def revoke_registration_token(
    *, application: Application, actor: str, remote_addr: str | None = None
) -> bool:
    """End `application`'s registration access token (RFC 7592), audited as revoke_token records a
    token, when it leaked, say: the client can no longer read, update or delete its registration
    (nothing issues it a new one), while its secret and access tokens keep working. Whether it had one."""
    tokens = list(
        AccessToken.objects.filter(application=application, scope=oauth2_settings.DCR_REGISTRATION_SCOPE)
    )
    revoked = [revoke_token(token=token, actor=actor, remote_addr=remote_addr) for token in tokens]
    return any(revoked)


def issue_registration_token(*, application: Application) -> str:
    """An RFC 7592 registration access token: manages this one client's registration, nothing else.
    Disabling the client suspends it, deleting the client ends it, revoking its tokens leaves it."""
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
    stored = hotpath.access_token_with_client(checksum)
    if (
        stored is None
        # For the registration endpoint alone, no resource server's to accept (RFC 7662 2.2).
        or is_registration_token(stored)
        or not stored.is_valid()
        or stored.application is None
        or not stored.application.enabled
    ):
        return {"active": False}
    metadata = {
        "active": True,
        "scope": stored.scope,
        "client_id": stored.application.client_id,
        "token_type": "Bearer",
        "exp": int(stored.expires.timestamp()),
        # When it was issued for its lifetime: DOT computed `expires` a moment before the row's
        # `created` was taken, and a second ending in between made exp - iat one short of it.
        "iat": int(stored.expires.timestamp()) - round((stored.expires - stored.created).total_seconds()),
        "iss": settings.ISSUER,
    }
    if stored.resource:
        # RFC 8707: a token restricted to resources is for them alone; a resource server that
        # introspects must see it (RFC 7662 2.2 `aud`, as a JWT's: RFC 7519 4.1.3).
        metadata["aud"] = list(stored.resource)
    return metadata


def _scope_detail(scope: Scope) -> dict:
    return {"scope": scope.name, "sandbox": scope.sandbox, "public": scope.public}


@transaction.atomic
def save_scope(
    *, scope: Scope, actor: str, changed_fields: Collection[str] = (), remote_addr: str | None = None
) -> Scope:
    """Save a new scope, or changes already set on `scope` (`changed_fields` names them): whether
    portal test tokens and dynamically registered clients may carry it (sandbox) is a grant."""
    created = scope._state.adding
    scope.full_clean()
    # The name it had, kept in the trail: bootstrap does not seed a scope an operator renamed again.
    renamed_from = (
        Scope.objects.filter(pk=scope.pk).exclude(name=scope.name).values_list("name", flat=True).first()
        if not created and "name" in changed_fields
        else None
    )
    scope.save()
    changes = sorted(changed_fields)
    if created or changes:
        record_event(
            kind=AuditEvent.Kind.SCOPE_CREATED if created else AuditEvent.Kind.SCOPE_CHANGED,
            actor=actor,
            remote_addr=remote_addr,
            detail={
                **({} if created else {"changed": changes}),
                **_scope_detail(scope),
                **({"renamed_from": renamed_from} if renamed_from else {}),
            },
        )
    return scope


@transaction.atomic
def delete_scope(*, scope: Scope, actor: str, remote_addr: str | None = None) -> None:
    """Delete a scope no client holds; one still held is refused, naming the clients that hold it."""
    holders = Application.objects.filter(allowed_scopes=scope).order_by("name")
    if holders.exists():
        named = ", ".join(f"{client.name} ({client.client_id})" for client in holders)
        raise ValidationError(f"The scope {scope.name} is held by {named}; remove it from them first.")
    record_event(
        kind=AuditEvent.Kind.SCOPE_DELETED, actor=actor, remote_addr=remote_addr, detail=_scope_detail(scope)
    )
    scope.delete()


OPERATORS_GROUP = "operators"
# (app label, codename): clients, scopes and tokens; audit events read-only; nothing about users.
MANAGE = ("add", "change", "delete", "view")
OPERATOR_PERMISSIONS = [
    *((Application._meta.app_label, f"{action}_application") for action in MANAGE),
    *((Scope._meta.app_label, f"{action}_scope") for action in MANAGE),
    (AuditEvent._meta.app_label, "view_auditevent"),
    # Revoking a token deletes it (this server issues no refresh tokens to keep as tombstones).
    (AccessToken._meta.app_label, "view_accesstoken"),
    (AccessToken._meta.app_label, "delete_accesstoken"),
]


@transaction.atomic
def ensure_operators_group() -> Group:
    """The "operators" group of the management console, with its permissions (added, never removed)."""
    group, _ = Group.objects.get_or_create(name=OPERATORS_GROUP)
    permissions = []
    for app_label, codename in OPERATOR_PERMISSIONS:
        permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
        if permission is None:
            raise LookupError(f"No permission {app_label}.{codename}: run migrate first.")
        permissions.append(permission)
    group.permissions.add(*permissions)
    return group


def active_tokens(*, application: Application) -> list:
    """`application`'s access tokens that have not expired, newest first. Only metadata: the
    tokens themselves are stored hashed. Registration access tokens (RFC 7592) are not listed."""
    return list(
        access_tokens()
        .filter(application=application, expires__gt=timezone.now())
        .order_by("-created", "-pk")
    )


def token_issue_times(*, application: Application, actor: str, since: datetime) -> list[datetime]:
    """When `actor` had tokens issued to `application` after `since`, oldest first: the audit
    trail's token_issued events (issue_token_for_owner names its actor there)."""
    return list(
        AuditEvent.objects.filter(
            kind=AuditEvent.Kind.TOKEN_ISSUED, application=application, actor=actor, created__gt=since
        )
        .order_by("created")
        .values_list("created", flat=True)
    )


@transaction.atomic
def issue_token_for_owner(
    *, application: Application, scopes: Collection[str], actor: str, remote_addr: str | None = None
) -> dict:
    """A client-credentials access token for `application`, asked for by its signed-in owner (the SDK
    portal's "New test token") rather than by the client with its secret, which the server cannot
    know. Generated, limited, stored and audited by the same DOT/oauthlib code as POST /oauth2/token;
    returns the token response (access_token, expires_in, scope, token_type).

    Decided and written with changes held off (hotpath.changes_held_off), on the client as it is
    then rather than as the caller read it: a scope withdrawn, or the client disabled, a moment
    before is seen; one a moment after waits for the token, and then narrows or revokes it."""
    server = get_oauthlib_core().server
    validator = server.request_validator
    request = OauthlibRequest(
        f"{settings.ISSUER}/oauth2/token", http_method="POST", headers={"REMOTE_ADDR": remote_addr or ""}
    )
    with hotpath.changes_held_off(router.db_for_write(AccessToken)):
        application = Application.objects.filter(pk=application.pk).first()
        if application is None:
            raise ValidationError("This client was deleted.")
        request.client, request.client_id = application, application.client_id
        request.grant_type, request.user, request.actor = "client_credentials", None, actor
        if not application.is_usable(request):
            raise ValidationError("This client is disabled.")
        try:
            allowed = validator.validate_scopes(application.client_id, list(scopes), application, request)
        except OAuth2Error as refused:  # the client's scopes since the caller read them
            raise ValidationError(refused.description) from refused
        if not allowed:
            raise ValidationError(f"This client may not hold the scope {' '.join(scopes) or '(none)'}.")
        token = server.default_token_type.create_token(request, refresh_token=False)
        validator.save_token(token, request)
    return dict(token)


def clear_expired_tokens(
    *,
    batch_size: int | None = None,
    pause: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> int:
    """Delete expired access tokens (those no refresh token points to), oldest first, in short
    transactions of `batch_size` rows with `pause` seconds between them, so that token issuance
    waits at most one batch (SQLite has one writer). Defaults: DOT's CLEAR_EXPIRED_TOKENS_BATCH_SIZE
    and _INTERVAL. `progress(deleted, total)` is called after each batch. Returns how many went.
    `stop_requested()`, asked before each batch and during the pauses, ends it early (an operator's
    Ctrl-C): a batch is never cut short, so the count returned is what went.

    DOT's clear_expired counts the remaining rows and loads each batch as model instances; this
    walks the primary key instead and deletes each batch with one statement."""
    batch_size = batch_size or oauth2_settings.CLEAR_EXPIRED_TOKENS_BATCH_SIZE
    pause = oauth2_settings.CLEAR_EXPIRED_TOKENS_BATCH_INTERVAL if pause is None else pause
    cutoff = timezone.now()
    expired = AccessToken.objects.filter(expires__lt=cutoff, refresh_token__isnull=True)
    total = expired.count()
    using = router.db_for_write(AccessToken)
    connection = connections[using]
    quote = connection.ops.quote_name
    table, token_id = quote(AccessToken._meta.db_table), quote(AccessToken._meta.pk.column)
    expires_field = AccessToken._meta.get_field("expires")
    refresh_tokens = get_refresh_token_model()._meta
    refresh_token_link = quote(refresh_tokens.get_field("access_token").column)
    # Rows between two ids that are expired and unreferenced: exactly the batch just selected.
    # Names are quoted from model metadata; every value is a parameter.
    delete_range = (
        f"DELETE FROM {table} WHERE {token_id} BETWEEN %s AND %s AND {quote(expires_field.column)} < %s "  # noqa: S608
        f"AND {token_id} NOT IN (SELECT {refresh_token_link} FROM {quote(refresh_tokens.db_table)} "
        f"WHERE {refresh_token_link} IS NOT NULL)"
    )
    cutoff_value = expires_field.get_db_prep_value(cutoff, connection)
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            # The batches touch most of the token-checksum index: keep it in memory (256 MiB at most).
            cursor.execute("PRAGMA cache_size = -262144")
    deleted, last_id = 0, 0
    while not (stop_requested and stop_requested()):
        ids = list(expired.filter(pk__gt=last_id).order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        # In the token writers' queue (hotpath.queued_writes): they wait for one batch, never poll.
        with hotpath.queued_writes(using), transaction.atomic(using=using), connection.cursor() as cursor:
            cursor.execute(delete_range, [ids[0], ids[-1], cutoff_value])
            deleted += cursor.rowcount
        last_id = ids[-1]
        if progress is not None:
            progress(deleted, total)
        _pause(pause, stop_requested)
    return deleted


def _pause(seconds: float, stop_requested: Callable[[], bool] | None) -> None:
    """Sleep `seconds`, in slices short enough that a stop request is not kept waiting."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0 and not (stop_requested and stop_requested()):
        time.sleep(min(left, 0.1))
