from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.db.models.signals import post_delete, post_save


class AuthServerConfig(AppConfig):
    name = "authserver"
    verbose_name = "Authorization server"

    def ready(self) -> None:
        from authserver.models import Scope
        from authserver.scopes import forget_scope_catalogue

        post_save.connect(forget_scope_catalogue, sender=Scope, dispatch_uid="forget-scopes-on-save")
        post_delete.connect(forget_scope_catalogue, sender=Scope, dispatch_uid="forget-scopes-on-delete")


class ConsoleAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the management console (authserver/sites.py) as its default site."""

    default = False  # named in INSTALLED_APPS; "authserver" itself stays AuthServerConfig
    default_site = "authserver.sites.ConsoleAdminSite"
