from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class AuthServerConfig(AppConfig):
    name = "authserver"
    verbose_name = "Authorization server"

    def ready(self) -> None:
        from authserver.models import Scope
        from authserver.scopes import forget_scope_catalogue

        post_save.connect(forget_scope_catalogue, sender=Scope, dispatch_uid="forget-scopes-on-save")
        post_delete.connect(forget_scope_catalogue, sender=Scope, dispatch_uid="forget-scopes-on-delete")
