"""Scopes as data: DOT's SCOPES_BACKEND_CLASS reading authserver.Scope rows."""

import logging
import re
import time

from django.core.cache import cache
from django.db import transaction
from oauth2_provider.scopes import BaseScopes

from authserver.models import Scope

log = logging.getLogger(__name__)

# RFC 6749 3.3: scope = scope-token *( SP scope-token ), scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE_SYNTAX = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*")
SCOPE_SYNTAX_MESSAGE = "The scope must be scope names separated by single spaces."

CATALOGUE_CACHE_KEY = "authserver:scope-catalogue"
# Scope descriptions and visibility change rarely; an edit reaches every worker within this time
# (and CATALOGUE_PROCESS_SECONDS). What a client may be granted is never cached.
CATALOGUE_CACHE_SECONDS = 60


# Every API request reads the catalogue (DOT fills request.scopes from it); each process keeps the
# shared cache's copy this long, so a request does not cost a cache round trip either.
CATALOGUE_PROCESS_SECONDS = 5
_in_process: tuple[float, list[dict]] | None = None


def well_formed_scope(scope: str) -> bool:
    """Whether `scope` is scope names separated by single spaces (RFC 6749 3.3), spaces around it
    aside: not a tab, a line break or a no-break space between or inside them."""
    return _SCOPE_SYNTAX.fullmatch(scope.strip(" ")) is not None


def scope_catalogue() -> list[dict]:
    global _in_process
    if _in_process is not None and _in_process[0] > time.monotonic():
        return _in_process[1]
    catalogue = _shared_scope_catalogue()
    _in_process = (time.monotonic() + CATALOGUE_PROCESS_SECONDS, catalogue)
    return catalogue


def _shared_scope_catalogue() -> list[dict]:
    # The cache only saves a query: with Redis down, read the database (README "What the server promises").
    try:
        catalogue = cache.get(CATALOGUE_CACHE_KEY)
    except Exception:  # noqa: BLE001
        log.warning("Scope catalogue: cache unreachable; reading the database")
        return _catalogue_from_database()
    if catalogue is None:
        catalogue = _catalogue_from_database()
        try:
            cache.set(CATALOGUE_CACHE_KEY, catalogue, CATALOGUE_CACHE_SECONDS)
        except Exception:  # noqa: BLE001
            log.warning("Scope catalogue: cache unreachable; not cached")
    return catalogue


def _catalogue_from_database() -> list[dict]:
    return list(Scope.objects.values("name", "description", "public", "sandbox"))


def scope_changed(using: str, **signal_arguments) -> None:
    """post_save and post_delete of a scope: the catalogue is forgotten now, for the rest of the
    change's transaction, and again once it commits: another worker reading the scopes meanwhile
    read the rows as they were, and put them in the shared cache."""
    forget_scope_catalogue()
    transaction.on_commit(forget_scope_catalogue, using=using)


def forget_scope_catalogue() -> None:
    global _in_process
    _in_process = None
    try:
        cache.delete(CATALOGUE_CACHE_KEY)
    except Exception:  # noqa: BLE001 (a stale entry expires within CATALOGUE_CACHE_SECONDS)
        log.warning("Scope catalogue: cache unreachable; not invalidated")


def sandbox_scope_names() -> list[str]:
    return list(Scope.objects.filter(sandbox=True).values_list("name", flat=True))


class DatabaseScopes(BaseScopes):
    """All scopes come from the database; what a client may get comes from the client's policy."""

    def get_all_scopes(self) -> dict[str, str]:
        return {entry["name"]: entry["description"] for entry in scope_catalogue()}

    def get_available_scopes(self, application=None, request=None, *args, **kwargs) -> list[str]:
        if application is None:  # server metadata: what anyone may read about
            return [entry["name"] for entry in scope_catalogue() if entry["public"]]
        return application.allowed_scope_names

    def get_default_scopes(self, application=None, request=None, *args, **kwargs) -> list[str]:
        # RFC 6749 3.3: a request without `scope` gets the client's pre-defined default, all it may hold.
        return [] if application is None else application.allowed_scope_names
