import secrets
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command

from authserver.management.base import OperatorCommand
from authserver.services import ensure_default_scopes, ensure_operators_group
from config.tls import ensure_self_signed_certificate
from fooapi.services import seed_demo_catalogue
from sdkportal.services import ensure_portal_client


class Command(OperatorCommand):
    help = (
        "Prepare this machine to serve, once and idempotently: TLS certificate, database tables, "
        "static files, the admin account and the default data."
    )

    def handle(self, *args, **options):
        if settings.TLS:
            self._certificate()
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        ensure_default_scopes()
        ensure_operators_group()
        if seed_demo_catalogue():
            self.stdout.write("Seeded the demo catalogue of the Foo API.")
        if ensure_portal_client():
            self.stdout.write(
                f"Registered the portal's own client; secret in {settings.PORTAL_CREDENTIALS_FILE}"
            )
        self._admin_account()
        self.stdout.write(self.style.SUCCESS(f"Ready: {settings.ISSUER}"))

    def _certificate(self) -> None:
        hosts = ["localhost", "127.0.0.1", "::1", urlsplit(settings.ISSUER).hostname or "localhost"]
        if ensure_self_signed_certificate(settings.TLS_CERT_FILE, settings.TLS_KEY_FILE, hosts):
            self.stdout.write(f"Created a self-signed TLS certificate: {settings.TLS_CERT_FILE}")

    def _admin_account(self) -> None:
        users = get_user_model()
        if users.objects.filter(username="admin").exists():
            return
        given = settings.ADMIN_PASSWORD
        password = given or secrets.token_urlsafe(12)
        users.objects.create_superuser(username="admin", email="", password=password)
        self.stdout.write(self.style.SUCCESS(f"Admin console: {settings.ISSUER}/admin/  user: admin"))
        if not given:
            self.stdout.write(
                self.style.WARNING(f"  password: {password}   (shown this once; change it in the admin)")
            )
