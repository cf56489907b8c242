from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.contrib.auth.signals import user_logged_in
from django.core.signals import request_finished, request_started
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save


class AuthServerConfig(AppConfig):
    name = "authserver"
    verbose_name = "Authorization server"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from oauth2_provider.models import get_access_token_model

        from authserver import sessions, signals, validity
        from authserver.models import Application, ClientScope, Scope
        from authserver.scopes import scope_changed

        post_save.connect(scope_changed, sender=Scope, dispatch_uid="forget-scopes-on-save")
        post_delete.connect(scope_changed, sender=Scope, dispatch_uid="forget-scopes-on-delete")
        # What workers remember of tokens and clients (hotpath.RememberedLookup) is forgotten
        # whenever one is changed or deleted, by whatever path. Not on a token's save: the token
        # endpoint inserts without save signals (hotpath.CompiledInsert) and a new token
        # invalidates nothing.
        post_save.connect(validity.client_saved, sender=Application, dispatch_uid="epoch-client-saved")
        post_delete.connect(
            validity.tokens_or_clients_changed, sender=Application, dispatch_uid="epoch-client-deleted"
        )
        post_delete.connect(
            validity.tokens_or_clients_changed,
            sender=get_access_token_model(),
            dispatch_uid="epoch-token-deleted",
        )
        # A client's scopes: rows of ClientScope, or the allowed_scopes relation's bulk changes.
        for signal in (post_save, post_delete):
            signal.connect(
                validity.tokens_or_clients_changed, sender=ClientScope, dispatch_uid="epoch-scopes"
            )
        m2m_changed.connect(
            validity.client_scopes_changed, sender=ClientScope, dispatch_uid="epoch-scopes-m2m"
        )
        # A user account deactivated by any save, not only services.set_user_active, takes its
        # clients with it (authserver/signals.py).
        pre_save.connect(signals.user_saving, sender=get_user_model(), dispatch_uid="user-active-saving")
        post_save.connect(signals.user_saved, sender=get_user_model(), dispatch_uid="user-active-saved")
        # A login starts its session's clock (authserver/sessions.py).
        user_logged_in.connect(sessions.session_started, dispatch_uid="session-started")
        # TOKEN_CACHE=shared: the epoch is read from the database once per request.
        request_started.connect(validity.request_started, dispatch_uid="epoch-request-started")
        request_finished.connect(validity.request_finished, dispatch_uid="epoch-request-finished")


class ConsoleAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the management console (authserver/sites.py) as its default site."""

    default = False  # named in INSTALLED_APPS; "authserver" itself stays AuthServerConfig
    default_site = "authserver.sites.ConsoleAdminSite"
