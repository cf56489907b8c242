from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from oauth2_provider.models import AbstractApplication, ApplicationManager
from oauth2_provider.settings import oauth2_settings

from authserver import bidi

# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
scope_token_validator = RegexValidator(
    r"^[\x21\x23-\x5b\x5d-\x7e]+\Z",  # \Z, not $: $ also matches before a final line break
    "A scope name is printable ASCII without spaces, double quotes or backslashes (RFC 6749 3.3).",
)


class Scope(models.Model):
    """A permission a client may be granted, e.g. `products:read`."""

    name = models.CharField(max_length=64, unique=True, validators=[scope_token_validator])
    description = models.CharField(max_length=255)
    sandbox = models.BooleanField(
        "sandbox",
        default=False,
        help_text="Test tokens handed out by the SDK portal and clients registered dynamically may carry it.",
    )
    public = models.BooleanField(
        "public",
        default=True,
        help_text="Advertised in server metadata. Privileged scopes (introspection, registration) are not.",
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # A token carrying only this scope is a registration access token (services.access_tokens):
        # granted as a scope, it would manage a client's registration and be kept at "revoke all".
        if self.name == oauth2_settings.DCR_REGISTRATION_SCOPE:
            raise ValidationError(
                {"name": "This name is reserved for registration access tokens (RFC 7592)."}
            )


class Application(AbstractApplication):
    """An OAuth client, with the per-client policy django-oauth-toolkit does not have."""

    class TokenEndpointAuthMethod(models.TextChoices):
        """RFC 7591 2's token_endpoint_auth_method values this server offers."""

        CLIENT_SECRET_BASIC = "client_secret_basic", "HTTP Basic (client_secret_basic)"
        CLIENT_SECRET_POST = "client_secret_post", "in the form body (client_secret_post)"

    allowed_scopes = models.ManyToManyField(
        Scope,
        through="ClientScope",
        related_name="applications",
        blank=True,
        help_text="Scopes this client may be granted; asking for no scope grants all of them.",
    )
    access_token_lifetime = models.PositiveIntegerField(
        "access-token lifetime",
        null=True,
        blank=True,
        validators=[MinValueValidator(60), MaxValueValidator(7 * 24 * 3600)],
        help_text="Seconds. Empty: the server default.",
    )
    enabled = models.BooleanField(
        default=True,
        help_text="A disabled client cannot get tokens, and its existing tokens stop working at once.",
    )
    # What a dynamically registered client asked for, echoed in its registration (RFC 7591 3.2.1);
    # the token endpoint takes either method from every client.
    token_endpoint_auth_method = models.CharField(
        "token endpoint authentication method",
        max_length=32,
        choices=TokenEndpointAuthMethod.choices,
        default=TokenEndpointAuthMethod.CLIENT_SECRET_BASIC,
        editable=False,
    )

    objects = ApplicationManager()

    class Meta(AbstractApplication.Meta):
        verbose_name = "client"
        indexes = [models.Index(fields=["name"])]

    def natural_key(self):
        return (self.client_id,)

    def get_absolute_url(self) -> str:
        # The client's page in the console; DOT's names an application view this server does not serve.
        return reverse(f"admin:{self._meta.app_label}_{self._meta.model_name}_change", args=[self.pk])

    def __str__(self) -> str:
        # A name stored before bidi controls were refused must not reorder the page around it,
        # wherever Django shows it (titles, messages, breadcrumbs, delete confirmations).
        return bidi.contained(super().__str__())

    def clean(self) -> None:
        super().clean()
        # New names only: a client named so before keeps its name, and stays editable and
        # disableable, until the name itself is changed.
        if bidi.is_refused_name(self.name) and self.name != self._stored_name():
            try:
                bidi.validate_name(self.name)
            except ValidationError as refused:
                raise ValidationError({"name": refused.error_list}) from refused
        # A deactivated account's clients are disabled with it (services.set_user_active) and stay
        # so: enabling one, or giving an enabled one to such an account, would hand its credentials
        # back to someone whose access was ended. Read afresh: the owner may have changed since.
        if self.enabled and self.user_id is not None:
            owner_model = self._meta.get_field("user").related_model
            if not owner_model._default_manager.filter(pk=self.user_id, is_active=True).exists():
                message = (
                    "The owner's account is deactivated: activate it first, or leave the client disabled."
                )
                raise ValidationError({"enabled": message})

    def _stored_name(self) -> str | None:
        if self._state.adding:
            return None
        return type(self)._default_manager.filter(pk=self.pk).values_list("name", flat=True).first()

    def is_usable(self, request) -> bool:
        return self.enabled

    @cached_property
    def allowed_scope_names(self) -> list[str]:
        # Loaded with the client by authserver.hotpath on the hot path; used once, then read afresh.
        joined = self.__dict__.pop("allowed_scope_names_joined", None)
        if joined is not None:
            return sorted(joined.split())
        return sorted(scope.name for scope in self.allowed_scopes.all())

    def allow_scopes(self, scopes) -> bool:
        """Whether this client may hold all of `scopes` (as AccessToken.allow_scopes asks of a token)."""
        return set(scopes) <= set(self.allowed_scope_names)

    @property
    def token_lifetime(self) -> int:
        return self.access_token_lifetime or settings.ACCESS_TOKEN_LIFETIME


class ClientScope(models.Model):
    """A scope held by a client. PROTECT: a scope in use cannot be deleted."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE)
    scope = models.ForeignKey(Scope, on_delete=models.PROTECT)

    class Meta:
        verbose_name = "client holding the scope"
        constraints = [models.UniqueConstraint(fields=["application", "scope"], name="unique_client_scope")]

    def __str__(self) -> str:
        return f"{self.application} ({self.application.client_id}) holds {self.scope}"


class AuditEvent(models.Model):
    """Something that happened to a client or its credentials. Written, never edited."""

    class Kind(models.TextChoices):
        TOKEN_ISSUED = "token_issued", "token issued"
        AUTH_FAILED = "auth_failed", "client authentication failed"
        TOKEN_REVOKED = "token_revoked", "token revoked"
        SECRET_ROTATED = "secret_rotated", "secret rotated"
        CLIENT_CREATED = "client_created", "client created"
        CLIENT_CHANGED = "client_changed", "client changed"
        CLIENT_DELETED = "client_deleted", "client deleted"
        SCOPE_CREATED = "scope_created", "scope created"
        SCOPE_CHANGED = "scope_changed", "scope changed"
        SCOPE_DELETED = "scope_deleted", "scope deleted"
        USER_DEACTIVATED = "user_deactivated", "user account deactivated"
        USER_ACTIVATED = "user_activated", "user account activated"
        USER_DELETED = "user_deleted", "user account deleted"
        USER_CREATED = "user_created", "user account created"
        # Its console powers (staff, superuser, groups, permissions) or its password.
        USER_CHANGED = "user_changed", "user account changed"
        # A group's permissions are each member's console rights.
        GROUP_CREATED = "group_created", "group created"
        GROUP_CHANGED = "group_changed", "group changed"
        GROUP_DELETED = "group_deleted", "group deleted"
        CONSOLE_LOGIN = "console_login", "console login"
        CONSOLE_LOGIN_FAILED = "console_login_failed", "console login failed"

    created = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    # No index of its own: (application, kind, created) below serves every lookup by client, and
    # each index is one more write with every token issued.
    application = models.ForeignKey(
        Application,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_events",
        db_index=False,
    )
    # Kept as text: it outlives a deleted client and records ids that never existed.
    client_id = models.CharField("client id", max_length=255, blank=True)
    actor = models.CharField(max_length=255, blank=True)
    remote_addr = models.GenericIPAddressField("remote address", null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [
            models.Index(fields=["kind", "created"]),
            models.Index(fields=["application", "kind", "created"]),
            # Lookups by the client id a caller presented (the dashboard's failed authentications, of
            # client ids that may not exist) cover those rows only: a token issued writes no entry here.
            models.Index(
                fields=["client_id", "created"],
                condition=models.Q(kind="auth_failed"),
                name="auditevent_auth_failed_client",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.client_id} at {self.created:%Y-%m-%d %H:%M:%S}"


class ValidityEpoch(models.Model):
    """The validity epoch where every app server reads it (TOKEN_CACHE=shared): one row, changed in
    the transaction of every change that can make a stored token or client invalid
    (authserver/validity.py)."""

    ROW = 1  # the primary key of the one row

    value = models.BigIntegerField()

    def __str__(self) -> str:
        return f"validity epoch {self.value}"
