import json

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from authserver import services
from authserver.backends import stored_username
from authserver.management.base import OperatorCommand
from authserver.scopes import sandbox_scope_names

# Which option gave the value a model field refuses.
FIELD_OPTIONS = {
    "name": "--name",
    "allowed_scopes": "--scope",
    "access_token_lifetime": "--token-ttl",
    "enabled": "--owner",  # an enabled client for a deactivated owner
}


class Command(OperatorCommand):
    help = "Register a client-credentials client and print its id and secret (shown this once)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--scope",
            help='Space-separated scopes the client may be granted (default: the sandbox scopes), "a b"',
        )
        parser.add_argument(
            "--token-ttl",
            type=int,
            metavar="SECONDS",
            help="Access-token lifetime for this client, 60 to 604800 (default: ACCESS_TOKEN_LIFETIME)",
        )
        parser.add_argument("--owner", metavar="USERNAME", help="The user who owns the client")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print one JSON object")

    def handle(self, *args, name, scope, token_ttl, owner, as_json: bool, **options):
        name = name.strip()  # as the console's form does: "billing " is the client "billing"
        if not name:  # the console lists clients by name: an operator always gives one
            raise CommandError("--name must not be blank.")
        scopes = scope.split() if scope is not None else sandbox_scope_names()
        if not scopes:  # as the console refuses one: a client without scopes gets no token
            raise CommandError("--scope must name at least one scope.")
        try:
            new_client = services.register_client(
                name=name,
                scopes=scopes,
                owner=self._owner(owner),
                access_token_lifetime=token_ttl,
                actor="manage.py create_client",
            )
        except ValidationError as error:
            raise CommandError(self._refusal(error)) from error
        application = new_client.application
        result = {
            "client_id": application.client_id,
            "client_secret": new_client.client_secret,
            "scope": " ".join(application.allowed_scope_names),
            "name": application.name,
            "access_token_lifetime": application.token_lifetime,
            "token_endpoint": f"{settings.ISSUER}/oauth2/token",
        }
        if as_json:
            self.stdout.write(json.dumps(result))
            return
        self.stdout.write(f"client_id:     {result['client_id']}")
        self.stdout.write(f"client_secret: {result['client_secret']}")
        self.stdout.write(f"scope:         {result['scope']}")
        self.stdout.write(self.style.WARNING("The secret is stored hashed and will not be shown again."))

    @staticmethod
    def _refusal(error: ValidationError) -> str:
        """The model's messages, each under the option that gave the value it refuses."""
        if not hasattr(error, "error_dict"):
            return "; ".join(error.messages)
        return "; ".join(
            f"{FIELD_OPTIONS[field]}: {message}" if field in FIELD_OPTIONS else message
            for field, messages in error.message_dict.items()
            for message in messages
        )

    @staticmethod
    def _owner(username: str | None):
        if username is None:
            return None
        try:
            # In any case, as the account logs in.
            owner = get_user_model().objects.get_by_natural_key(stored_username(username))
        except get_user_model().DoesNotExist as error:
            raise CommandError(f"No user named {username!r}.") from error
        if not owner.is_active:  # the model refuses it too, in words about the console's checkbox
            raise CommandError(f"The user {username!r} is deactivated: activate the account first.")
        return owner
