"""The management console's client and user forms (used by authserver/admin.py)."""

import secrets

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.core.exceptions import ValidationError
from django.utils.html import format_html, format_html_join
from oauth2_provider.settings import oauth2_settings

from authserver.backends import users_named
from authserver.models import Application, Scope

# Grant names as server metadata spells them (OAUTH2_GRANT_TYPES_SUPPORTED) -> DOT's constants.
# refresh_token is missing on purpose: no client is registered for it alone.
APPLICATION_GRANT_TYPES = {
    "authorization_code": Application.GRANT_AUTHORIZATION_CODE,
    "implicit": Application.GRANT_IMPLICIT,
    "password": Application.GRANT_PASSWORD,
    "client_credentials": Application.GRANT_CLIENT_CREDENTIALS,
    "urn:ietf:params:oauth:grant-type:device_code": Application.GRANT_DEVICE_CODE,
}
# Grants that send a user's browser back to the client, and so need a callback (redirect) URL.
GRANTS_WITH_CALLBACK = (
    Application.GRANT_AUTHORIZATION_CODE,
    Application.GRANT_IMPLICIT,
    Application.GRANT_OPENID_HYBRID,
)


def served_grant_types() -> list[tuple[str, str]]:
    """(DOT constant, label) for each grant this server serves, as its metadata advertises them."""
    labels = dict(Application.GRANT_TYPES)
    return [
        (APPLICATION_GRANT_TYPES[name], labels[APPLICATION_GRANT_TYPES[name]])
        for name in oauth2_settings.OAUTH2_GRANT_TYPES_SUPPORTED
        if name in APPLICATION_GRANT_TYPES
    ]


class CheckedMultipleChoiceField(forms.ModelMultipleChoiceField):
    """Django's, with each chosen id checked by its model field first: Django checks each with
    filter(), which takes any integer, then looks them up together, where an id beyond the
    database's integer range overflowed (OverflowError on SQLite: a tampered form was a 500)."""

    def clean(self, value):
        opts = self.queryset.model._meta
        key = opts.get_field(self.to_field_name) if self.to_field_name else opts.pk
        for pk in value if isinstance(value, (list, tuple)) else ():
            try:
                key.clean(pk, None)
            except ValidationError as invalid:
                raise ValidationError(
                    self.error_messages["invalid_pk_value"], code="invalid_pk_value", params={"pk": pk}
                ) from invalid
        return super().clean(value)


class ScopeCheckboxes(CheckedMultipleChoiceField):
    """Scopes as checkboxes, each with its description."""

    widget = forms.CheckboxSelectMultiple(attrs={"class": "scope-choices"})

    def __init__(self, **kwargs):
        super().__init__(
            queryset=Scope.objects.order_by("name"),
            label="Allowed scopes",
            help_text="What this client may be granted; a token request naming no scope gets all of them.",
            error_messages={"required": "Pick at least one scope: a client without scopes gets no token."},
            **kwargs,
        )

    def label_from_instance(self, scope: Scope):
        tags = [("sandbox", "test tokens may carry it")] if scope.sandbox else []
        if not scope.public:
            tags.append(("private", "not advertised in server metadata"))
        return format_html(
            '<code class="scope-name">{}</code> <span class="scope-description">{}</span>{}',
            scope.name,
            scope.description,
            format_html_join("", ' <span class="scope-tag" title="{}">{}</span>', ((t, n) for n, t in tags)),
        )


class OwnerField(forms.ModelChoiceField):
    """The owning user, typed as a username: operators may not browse the user list."""

    widget = forms.TextInput(attrs={"autocomplete": "off", "class": "vTextField"})

    def __init__(self, **kwargs):
        users = get_user_model()
        super().__init__(
            queryset=users.objects.all(),
            to_field_name=users.USERNAME_FIELD,
            required=False,
            label="Owner",
            help_text="Optional: the username of the person or team account responsible for this client.",
            error_messages={"invalid_choice": "There is no user with this username."},
            **kwargs,
        )


class ClientForm(forms.ModelForm):
    """What an operator edits on a registered client. The secret is never a field: it is stored hashed."""

    # Not the model's allowed_scopes: the services save scopes (through ClientScope) with the client.
    scopes = ScopeCheckboxes()
    user = OwnerField()

    class Meta:
        model = Application
        fields = ["name", "scopes", "access_token_lifetime", "user", "enabled"]
        help_texts = {
            "name": "Shown in the console and the audit trail.",
            "access_token_lifetime": (
                f"Seconds, 60 to 604800. Empty: the server default ({settings.ACCESS_TOKEN_LIFETIME} s)."
            ),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "name" in self.fields:  # a user who may only view clients gets a form without fields
            self.fields["name"].required = True
        if self.instance.pk is not None:
            self.initial["scopes"] = [scope.pk for scope in self.instance.allowed_scopes.all()]
        if self.instance.user_id is not None:
            self.initial["user"] = self.instance.user.get_username()

    def clean_user(self):
        owner = self.cleaned_data["user"]
        # A developer's portal sandbox client (sdkportal's SandboxClient, Application.sandbox_of): the
        # portal manages it for them, and their account's deactivation or deletion, which stop the
        # clients it owns, must stop it too.
        sandbox = getattr(self.instance, "sandbox_of", None) if self.instance.pk is not None else None
        if sandbox is None or getattr(owner, "pk", None) in (self.instance.user_id, sandbox.developer_id):
            return owner
        raise ValidationError(
            "This is the portal sandbox client of “%(developer)s”: it stays theirs.",
            code="sandbox_owner",
            params={"developer": sandbox.developer.get_username()},
        )


def new_form_id() -> str:
    return secrets.token_urlsafe(16)


class RotateSecretForm(forms.Form):
    """The confirmation of "Rotate secret". A new form id each time it is shown, as the register
    form's: the same form posted again (the browser reloading the page that showed the new secret,
    or Back and resubmit) rotates nothing (ApplicationAdmin.rotate_secret_view)."""

    form_id = forms.CharField(widget=forms.HiddenInput, initial=new_form_id, max_length=64)


class RegisterClientForm(ClientForm):
    """Registering a client: the server generates its id and secret; the grant type is chosen once."""

    # A new one each time the form is shown: the same form posted again (the browser reloading the
    # page that showed the secret) registers no second client (ApplicationAdmin.add_view).
    form_id = forms.CharField(widget=forms.HiddenInput, initial=new_form_id, max_length=64)

    authorization_grant_type = forms.ChoiceField(
        label="Grant type",
        widget=forms.RadioSelect,
        choices=served_grant_types,
        initial=Application.GRANT_CLIENT_CREDENTIALS,
        help_text=(
            "The grants this server serves. A callback URL is asked for only when the grant sends a "
            "user's browser back to the client; with client credentials the client authenticates "
            "with its own id and secret and no browser is involved, so there is no callback URL."
        ),
    )
    redirect_uris = forms.CharField(
        label="Callback URLs",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "data-callback-grants": " ".join(GRANTS_WITH_CALLBACK)}),
        help_text="HTTPS URLs, separated by spaces, that the user's browser may be sent back to.",
    )

    class Meta(ClientForm.Meta):
        fields = [
            "form_id",
            "name",
            "authorization_grant_type",
            "redirect_uris",
            "scopes",
            "access_token_lifetime",
            "user",
            "enabled",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["scopes"].initial = [scope.pk for scope in Scope.objects.filter(sandbox=True)]

    def clean(self):
        cleaned_data = super().clean()
        if cleaned_data.get("authorization_grant_type") not in GRANTS_WITH_CALLBACK:
            # Hidden for this grant: whatever the browser sent is not the operator's intent.
            cleaned_data["redirect_uris"] = ""
        return cleaned_data


class UsernameInAnyCaseMixin:
    """A username another account has in any case is refused, as at the portal's sign-up (Django's
    own check, iexact, folds only ASCII letters on SQLite, and a renamed account is not checked)."""

    def clean_username(self) -> str:
        clean = getattr(super(), "clean_username", None)
        username = clean() if clean else self.cleaned_data.get("username")
        others = users_named(username or "").exclude(pk=self.instance.pk)
        if username and others.exists():
            raise self.instance.unique_error_message(type(self.instance), ["username"])
        return username


class ConsoleUserCreationForm(UsernameInAnyCaseMixin, AdminUserCreationForm):
    """The console's "Add user" form."""


class ConsoleUserChangeForm(UsernameInAnyCaseMixin, UserChangeForm):
    """The console's user change form."""
