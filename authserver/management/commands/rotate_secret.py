import json

from django.core.management.base import CommandError

from authserver import services
from authserver.management.base import OperatorCommand


class Command(OperatorCommand):
    help = "Give a client a new secret (printed this once); the old secret stops working at once."

    def add_arguments(self, parser):
        parser.add_argument("client_id", metavar="CLIENT_ID", help="The client's id (its client key)")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print one JSON object")

    def handle(self, *args, client_id: str, as_json: bool, **options):
        application = services.find_client(client_id)
        if application is None:
            raise CommandError(f"No client with client_id {client_id!r}.")
        client_secret = services.rotate_secret(application=application, actor="manage.py rotate_secret")
        if not application.enabled:  # on stderr: stdout stays the credentials (one JSON object)
            self.stderr.write(
                "Note: the client is disabled: the token endpoint refuses it, with the new secret too, "
                "until it is enabled in the console."
            )
        if as_json:
            self.stdout.write(json.dumps({"client_id": client_id, "client_secret": client_secret}))
            return
        self.stdout.write(f"client_id:     {client_id}")
        self.stdout.write(f"client_secret: {client_secret}")
        self.stdout.write(
            self.style.WARNING("The old secret no longer works; this one will not be shown again.")
        )
