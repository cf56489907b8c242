"""The management console's model admins (the Django admin at /admin/, see authserver/sites.py).

Every change to a client or its credentials goes through authserver.services, which records an
audit event with the operator as actor. The client and access-token admins are plugged in through
django-oauth-toolkit's settings (APPLICATION_ADMIN_CLASS, ACCESS_TOKEN_ADMIN_CLASS), and DOT
registers them; the scope and audit admins are registered here.
"""

from dataclasses import dataclass

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.contrib.auth import admin as auth_admin
from django.contrib.auth import get_permission_codename, get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, ManyToManyField, OuterRef, Prefetch, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst
from oauth2_provider import admin as dot_admin
from oauth2_provider.models import get_access_token_model

from authserver import services, throttling
from authserver.backends import users_named
from authserver.bidi import isolated
from authserver.forms import (
    CheckedMultipleChoiceField,
    ClientForm,
    ConsoleUserChangeForm,
    ConsoleUserCreationForm,
    RegisterClientForm,
    RotateSecretForm,
    served_grant_types,
)
from authserver.models import Application, AuditEvent, ClientScope, Scope
from authserver.sites import selection_digest
from config.tls import served_self_signed_certificate

AccessToken = get_access_token_model()

# Where a just-generated secret waits for the one page view that shows it (then it is dropped).
# The client page lists this many of its newest active tokens; the token list has them all.
TOKENS_SHOWN = 50


def actor(request) -> str:
    return f"user:{request.user.get_username()}"


def remote_addr(request) -> str | None:
    return throttling.client_address(request.META) or None


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def counted(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def moment(value) -> str | None:
    """A compact, sortable timestamp for list columns (the server's time zone, UTC by default)."""
    return None if value is None else timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")


def may_view(request, model) -> bool:
    """Whether the console shows `model`'s pages to this user (ModelAdmin.has_view_permission): a
    link to one is shown only to those it does not answer 403."""
    opts = model._meta
    return any(
        request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")
        for action in ("view", "change")
    )


def long_value(value: str):
    """An id or actor cut short on screen (console.css), whole in the page for copying and searching."""
    return format_html('<code class="console-long" title="{}">{}</code>', value, value) if value else None


# --- Clients ---------------------------------------------------------------------------------------


class GrantTypeFilter(admin.SimpleListFilter):
    """The grants this server serves, and any other a stored client has."""

    title = "grant type"
    parameter_name = "grant_type"

    def lookups(self, request, model_admin):
        labels = dict(Application.GRANT_TYPES)
        stored = Application.objects.order_by().values_list("authorization_grant_type", flat=True).distinct()
        grants = dict(served_grant_types()) | {grant: labels.get(grant, grant) for grant in stored}
        return sorted(grants.items(), key=lambda choice: choice[1])

    def queryset(self, request, queryset):
        return queryset.filter(authorization_grant_type=self.value()) if self.value() else queryset


@dataclass(frozen=True)
class ClientAction:
    """Something an operator does to clients from the client page, and (but for rotating the
    secret, whose new value must reach each client's owner) in bulk from the list."""

    name: str  # the admin action's name, and the last part of the client page URL
    label: str
    question: str
    button: str


CLIENT_ACTIONS = {
    action.name: action
    for action in [
        ClientAction(
            "rotate_secret",
            "Rotate secret",
            "A new secret is generated and shown once. The current secret stops working at once: "
            "the client gets invalid_client until it uses the new one. Its tokens stay valid.",
            "Rotate the secret",
        ),
        ClientAction(
            "revoke_tokens",
            "Revoke all tokens",
            "Every access token these clients hold stops working at once. They can get new ones. "
            "A registration access token (RFC 7592) is kept: disable or delete its client to end it.",
            "Revoke all their tokens",
        ),
        ClientAction(
            "disable",
            "Disable",
            "A disabled client gets invalid_client at the token endpoint, and its existing tokens "
            "stop working at once at the Foo API and at introspection. Enabling it again restores them.",
            "Disable",
        ),
        ClientAction("enable", "Enable", "These clients may get tokens again.", "Enable"),
    ]
}


class DeletedThroughTheService:
    """The change list's "delete selected" deletes each object through delete_model, and so through
    its service and with its audit event, all in one transaction; never a bare queryset delete."""

    @transaction.atomic
    def delete_queryset(self, request, queryset):
        for each in queryset:
            self.delete_model(request, each)


class ApplicationAdmin(DeletedThroughTheService, admin.ModelAdmin):
    """Clients: registered here with a secret shown once, then managed through services."""

    form = ClientForm
    add_form = RegisterClientForm
    list_display = (
        "name",
        "client_id_column",
        "owner",
        "grant_type",
        "scopes",
        "active_tokens",
        "last_token_issued",
        "enabled",
    )
    list_filter = (GrantTypeFilter, ("allowed_scopes", admin.RelatedFieldListFilter), "enabled")
    search_fields = ("name", "client_id", f"user__{get_user_model().USERNAME_FIELD}")
    search_help_text = "Search by name, client id or owner's username."
    list_select_related = ("user",)
    ordering = ("name", "client_id")
    view_on_site = False  # get_absolute_url is this very page
    actions = ("revoke_tokens", "disable", "enable")
    readonly_fields = (
        "client_id",
        "client_secret_note",
        "client_secret_stored",
        "owner",
        "grant_type",
        "registration_source",
        "token_endpoint_auth_method",
        "created",
        "updated",
    )
    add_fieldsets = [(None, {"fields": RegisterClientForm.Meta.fields})]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "name",
                    "client_id",
                    "client_secret_note",
                    "grant_type",
                    "scopes",
                    "access_token_lifetime",
                    "user",
                    "enabled",
                ]
            },
        ),
        (
            "Registration",
            {"fields": ["registration_source", "token_endpoint_auth_method", "created", "updated"]},
        ),
    ]

    # -- list ------------------------------------------------------------------------------------

    def get_queryset(self, request):
        active_tokens = (
            services.access_tokens()
            .filter(application=OuterRef("pk"), expires__gt=timezone.now())
            .order_by()
            .values("application")
            .annotate(count=Count("pk"))
            .values("count")
        )
        last_issued = AuditEvent.objects.filter(
            application=OuterRef("pk"), kind=AuditEvent.Kind.TOKEN_ISSUED
        ).order_by("-created")
        return (
            super()
            .get_queryset(request)
            .annotate(
                active_token_count=Coalesce(Subquery(active_tokens), 0),
                last_token_issued_at=Subquery(last_issued.values("created")[:1]),
            )
            .prefetch_related(Prefetch("allowed_scopes", queryset=Scope.objects.order_by("name")))
        )

    @admin.display(description="client id", ordering="client_id")
    def client_id_column(self, client: Application):
        return long_value(client.client_id)

    @admin.display(description="owner", ordering=f"user__{get_user_model().USERNAME_FIELD}")
    def owner(self, client: Application):
        return client.user.get_username() if client.user else None

    @admin.display(description="grant type", ordering="authorization_grant_type")
    def grant_type(self, client: Application):
        return client.get_authorization_grant_type_display()

    @admin.display(description="scopes")
    def scopes(self, client: Application):
        names = [(scope.name,) for scope in client.allowed_scopes.all()]
        return format_html_join(" ", '<code class="scope-name">{}</code>', names) or None

    @admin.display(description="active tokens", ordering="active_token_count")
    def active_tokens(self, client: Application):
        return client.active_token_count

    @admin.display(description="last token issued", ordering="last_token_issued_at")
    def last_token_issued(self, client: Application):
        return moment(client.last_token_issued_at)

    @admin.display(description="client secret")
    def client_secret_note(self, client: Application):
        rotate = admin_url(Application, "rotate_secret", client.pk)
        return format_html(
            '{} Lost it? <a href="{}">Rotate the secret</a> for a new one.',
            self.client_secret_stored(client),
            rotate,
        )

    @admin.display(description="client secret")
    def client_secret_stored(self, client: Application):
        """The note for those who may not rotate the secret: no link to a page that answers 403."""
        return "Stored hashed: it was shown once, when it was generated, and cannot be read again."

    # -- register and edit -----------------------------------------------------------------------

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return self.add_fieldsets
        # Links only where they lead: rotating takes changing the client, and the owner read-only
        # (Django links it to the user's page) takes viewing users, which operators may not.
        shown = {}
        if not self.may_perform(request, CLIENT_ACTIONS["rotate_secret"], obj):
            shown["client_secret_note"] = "client_secret_stored"
            if not may_view(request, get_user_model()):
                shown["user"] = "owner"
        return [
            (title, {**options, "fields": [shown.get(field, field) for field in options["fields"]]})
            for title, options in self.fieldsets
        ]

    def add_view(self, request, form_url="", extra_context=None):
        if request.method == "POST":
            # Checked and registered in one transaction, one operator's form at a time: a double
            # click posts the same form twice at once, and both must not find it unregistered.
            with transaction.atomic():
                services.lock_user(request.user)
                registered = self._registered_by_this_form(request)
                if registered is not None:
                    return registered
                return self._add_view(request, form_url, extra_context)
        return self._add_view(request, form_url, extra_context)

    def _add_view(self, request, form_url, extra_context):
        context = {
            "title": "Register a client",
            # The next page must be the one that shows the secret, whatever button is pressed.
            "show_save_and_add_another": False,
            "show_save_and_continue": False,
            **(extra_context or {}),
        }
        return super().add_view(request, form_url, context)

    def save_model(self, request, obj, form, change):
        scopes = [scope.name for scope in form.cleaned_data["scopes"]]
        if change:
            services.update_client(
                application=obj,
                changed_fields=[name for name in form.changed_data if name != "scopes"],
                scopes=scopes,
                actor=actor(request),
                remote_addr=remote_addr(request),
            )
            return
        new_client = services.register_client(
            name=obj.name,
            scopes=scopes,
            owner=obj.user,
            access_token_lifetime=obj.access_token_lifetime,
            enabled=obj.enabled,
            authorization_grant_type=obj.authorization_grant_type,
            redirect_uris=obj.redirect_uris,
            actor=actor(request),
            remote_addr=remote_addr(request),
            form_id=form.cleaned_data["form_id"],
        )
        # The admin goes on with `obj` (history, response): make it the client the service saved.
        obj.pk = new_client.application.pk
        obj.refresh_from_db()
        obj._state.adding = False
        # Kept in memory for this request's response only (response_add): never in the session store.
        request.new_client_secret = new_client.client_secret

    def _registered_by_this_form(self, request):
        """When this operator posted this registration form before (a reload of the page that showed
        the secret, a second click): no second client, but the first one's page, which says why.
        None for a form not seen before."""
        try:  # only an id the form takes: a NUL character was a 500 on PostgreSQL, in the lookup
            form_id = RegisterClientForm.base_fields["form_id"].clean(request.POST.get("form_id"))
        except ValidationError:
            return None  # the form shows the error
        registered = services.registered_with_form(actor=actor(request), form_id=form_id)
        if registered is None:
            return None
        client = registered.application
        if client is None:
            message = "This form was submitted before; the client it registered is deleted since."
            self.message_user(request, message, messages.WARNING)
            return HttpResponseRedirect(admin_url(Application, "changelist"))
        self.message_user(
            request,
            format_html(
                "This form was submitted before: “{}” was registered then and its secret shown once. "
                "No other client was registered. To get a new secret, rotate this one's.",
                isolated(client),
            ),
            messages.WARNING,
        )
        return HttpResponseRedirect(admin_url(Application, "change", client.pk))

    def response_add(self, request, obj, post_url_continue=None):
        self.message_user(
            request, format_html("The client “{}” was registered.", isolated(obj)), messages.SUCCESS
        )
        return self._secret_page(request, obj, request.new_client_secret)

    def delete_model(self, request, obj):
        services.delete_client(application=obj, actor=actor(request), remote_addr=remote_addr(request))

    # -- the secret, shown once ------------------------------------------------------------------

    def _secret_page(self, request, client: Application, client_secret: str):
        """The answer to the POST that made the secret: it is shown in this response only, never
        stored in plain text anywhere (not even in the session), and never cached."""
        context = {
            **self.admin_site.each_context(request),
            "title": f"Client secret of {client}",
            "opts": self.opts,
            "original": client,
            "client_secret": client_secret,
            "token_endpoint": f"{settings.ISSUER}/oauth2/token",
            # The "Try it" curl must trust `make run`'s self-signed certificate, or it fails (curl: 60).
            "certificate_file": served_self_signed_certificate(settings.TLS_CERT_FILE)
            if settings.TLS
            else None,
        }
        request.current_app = self.admin_site.name
        response = TemplateResponse(request, "admin/authserver/application/client_secret.html", context)
        add_never_cache_headers(response)
        return response

    # -- actions: on one client (its page) and in bulk (the list) --------------------------------

    def get_urls(self):
        def view(function):
            return self.admin_site.admin_view(function)

        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        client_urls = [
            path(
                f"<path:object_id>/{action.name.replace('_', '-')}/",
                view(self.client_action_view),
                {"action_name": action.name},
                name=f"{prefix}_{action.name}",
            )
            for action in CLIENT_ACTIONS.values()
        ]
        return [
            path(
                "<path:object_id>/tokens/<int:token_id>/revoke/",
                view(self.revoke_token_view),
                name=f"{prefix}_revoke_token",
            ),
            path(
                "<path:object_id>/registration-token/revoke/",
                view(self.revoke_registration_token_view),
                name=f"{prefix}_revoke_registration_token",
            ),
            *client_urls,
            *super().get_urls(),
        ]

    def client_action_view(self, request, object_id, action_name):
        client = self.get_object(request, unquote(object_id))
        if client is None:
            raise Http404("No such client.")
        action = CLIENT_ACTIONS[action_name]
        if not self.may_perform(request, action, client):
            raise PermissionDenied
        if request.method == "POST":
            if action.name == "rotate_secret":
                return self._rotate_secret(request, client)
            response = self._perform(request, action, [client])
            return response or HttpResponseRedirect(admin_url(Application, "change", client.pk))
        return self._confirmation(request, action, [client], bulk=False)

    @transaction.atomic
    def _rotate_secret(self, request, client: Application):
        """Once per confirmation form: the same form posted again (a reload of the page that showed
        the new secret, Back and resubmit, a second click) rotates nothing, as it would replace the
        secret the operator may have copied already; it leads to the client's page, which says why."""
        form = RotateSecretForm(request.POST)
        if not form.is_valid():
            message = "This confirmation was out of date: nothing was rotated. Confirm again."
            self.message_user(request, message, messages.ERROR)
            return HttpResponseRedirect(admin_url(Application, "rotate_secret", client.pk))
        form_id = form.cleaned_data["form_id"]
        # One operator's form at a time: a double click posts it twice at once, and both must not
        # find it unused.
        services.lock_user(request.user)
        if services.rotated_with_form(actor=actor(request), form_id=form_id) is not None:
            self.message_user(
                request,
                format_html(
                    "This form was submitted before: the secret of “{}” was rotated then, and the new "
                    "secret shown once; it is not shown again. Nothing was rotated now. Lost it? Rotate "
                    "the secret again.",
                    isolated(client),
                ),
                messages.WARNING,
            )
            return HttpResponseRedirect(admin_url(Application, "change", client.pk))
        client_secret = services.rotate_secret(
            application=client, actor=actor(request), remote_addr=remote_addr(request), form_id=form_id
        )
        self.message_user(
            request,
            format_html("The secret of “{}” was rotated; the old one no longer works.", isolated(client)),
        )
        return self._secret_page(request, client, client_secret)

    def may_perform(self, request, action: ClientAction, client: Application | None = None) -> bool:
        if action.name == "revoke_tokens":
            return self.has_revoke_tokens_permission(request, client)
        return self.has_change_permission(request, client)

    def has_revoke_tokens_permission(self, request, obj=None) -> bool:
        """Revoking deletes tokens: it takes what revoking one token takes too, beside changing
        clients. One permission name for the bulk action, as Django's action needs any one of its."""
        return self.has_change_permission(request, obj) and can_revoke_tokens(request)

    @admin.action(description="Revoke all tokens of the selected clients", permissions=["revoke_tokens"])
    def revoke_tokens(self, request, queryset):
        return self._confirm_then_perform(request, CLIENT_ACTIONS["revoke_tokens"], queryset)

    @admin.action(description="Disable the selected clients", permissions=["change"])
    def disable(self, request, queryset):
        return self._confirm_then_perform(request, CLIENT_ACTIONS["disable"], queryset)

    @admin.action(description="Enable the selected clients", permissions=["change"])
    def enable(self, request, queryset):
        return self._confirm_then_perform(request, CLIENT_ACTIONS["enable"], queryset)

    def _confirm_then_perform(self, request, action: ClientAction, queryset):
        # "Select all N": the confirmation posts the digest of the clients it listed, and a client
        # the list gained since (a sign-up) is not acted on unseen, as delete_selected does.
        select_across = request.POST.get("select_across") == "1"
        selection = selection_digest(queryset) if select_across else None
        if request.POST.get("post") == "yes":
            if select_across and request.POST.get("selection") != selection:
                message = (
                    "The list changed since the confirmation page was shown: nothing was done. Select again."
                )
                self.message_user(request, message, messages.ERROR)
                return None
            return self._perform(request, action, list(queryset))
        return self._confirmation(request, action, list(queryset), bulk=True, selection=selection)

    def _confirmation(
        self,
        request,
        action: ClientAction,
        clients: list[Application],
        *,
        bulk: bool,
        selection: str | None = None,
    ):
        context = {
            **self.admin_site.each_context(request),
            "title": f"{action.label}: are you sure?",
            "opts": self.opts,
            "action": action,
            "clients": clients,
            "bulk": bulk,
            # "Select all N" on the list: the confirmation posts that again, not N ids, which past
            # DATA_UPLOAD_MAX_NUMBER_FIELDS (200) or the body limit were a 400 or 413 page.
            "select_across": bulk and request.POST.get("select_across") == "1",
            "selection": selection,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "original": None if bulk else clients[0],
            "form": RotateSecretForm() if action.name == "rotate_secret" else None,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/authserver/application/action_confirmation.html", context)

    @transaction.atomic
    def _perform(self, request, action: ClientAction, clients: list[Application]):
        who = {"actor": actor(request), "remote_addr": remote_addr(request)}
        if action.name == "revoke_tokens":
            revoked = sum(services.revoke_client_tokens(application=client, **who) for client in clients)
            self.message_user(
                request, f"Revoked {counted(revoked, 'token')} of {counted(len(clients), 'client')}."
            )
            return None
        enabled = action.name == "enable"
        changed, refused = [], []
        for client in (client for client in clients if client.enabled != enabled):
            try:
                services.set_client_enabled(application=client, enabled=enabled, **who)
            except ValidationError as error:  # its owner's account is deactivated (Application.clean)
                client.enabled = not enabled
                refused.append(format_html("“{}”: {}", isolated(client), " ".join(error.messages)))
            else:
                changed.append(client)
        state = "Enabled" if enabled else "Disabled"
        self.message_user(request, f"{state} {counted(len(changed), 'client')}.")
        for refusal in refused:
            self.message_user(request, format_html("Not enabled: {}", refusal), messages.ERROR)
        return None

    # -- the client page: its active tokens, recent audit events, actions -------------------------

    def revoke_token_view(self, request, object_id, token_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        client = self._client_to_revoke_from(request, object_id)
        token = get_object_or_404(services.access_tokens(), pk=token_id, application=client)
        services.revoke_token(token=token, actor=actor(request), remote_addr=remote_addr(request))
        self.message_user(request, format_html("Revoked token #{} of “{}”.", token_id, isolated(client)))
        return HttpResponseRedirect(admin_url(Application, "change", client.pk))

    def revoke_registration_token_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        client = self._client_to_revoke_from(request, object_id)
        if not services.revoke_registration_token(
            application=client, actor=actor(request), remote_addr=remote_addr(request)
        ):
            raise Http404("This client has no registration access token.")
        message = format_html(
            "Revoked the registration access token of “{}”: it can no longer read, update or "
            "delete its registration. Its secret and access tokens still work.",
            isolated(client),
        )
        self.message_user(request, message)
        return HttpResponseRedirect(admin_url(Application, "change", client.pk))

    def _client_to_revoke_from(self, request, object_id) -> Application:
        """The client whose token a revoke button on its page names, to one who may revoke it."""
        client = self.get_object(request, unquote(object_id))
        if client is None:
            raise Http404("No such client.")
        if not self.has_revoke_tokens_permission(request, client):
            raise PermissionDenied
        return client

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method == "POST" and "_saveasnew" in request.POST:
            # Django's "save as new" (no button here, save_as is off, but honoured when posted)
            # would register a client past add_view's one-registration-per-form check.
            message = "A client is registered on the Add page, never by saving another as new."
            self.message_user(request, message, messages.ERROR)
            return HttpResponseRedirect(admin_url(Application, "add"))
        client = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if client is not None:
            tokens = services.access_tokens().filter(application=client, expires__gt=timezone.now())
            context |= {
                "active_tokens": tokens.order_by("-created")[:TOKENS_SHOWN],
                "active_token_total": client.active_token_count,
                "tokens_url": admin_url(AccessToken, "changelist") + f"?application__id__exact={client.pk}",
                "recent_events": client.audit_events.order_by("-created", "-pk")[:10],
                "events_url": admin_url(AuditEvent, "changelist") + f"?application__id__exact={client.pk}",
                "registration_token": services.registration_token(application=client),
                "can_view_tokens": can_view_tokens(request),
                "can_revoke_tokens": self.has_revoke_tokens_permission(request, client),
                "client_actions": [
                    (action, admin_url(Application, action.name, client.pk))
                    for action in CLIENT_ACTIONS.values()
                    if action.name != ("disable" if not client.enabled else "enable")
                    and self.may_perform(request, action, client)
                ],
            }
        return super().change_view(request, object_id, form_url, context)


def can_view_tokens(request) -> bool:
    # What the token list asks (AccessTokenAdmin: no change permission, so view alone).
    return request.user.has_perm(
        f"{AccessToken._meta.app_label}.{get_permission_codename('view', AccessToken._meta)}"
    )


def can_revoke_tokens(request) -> bool:
    # Revoking deletes the token: this server issues no refresh tokens that would need a tombstone.
    return request.user.has_perm(
        f"{AccessToken._meta.app_label}.{get_permission_codename('delete', AccessToken._meta)}"
    )


# --- Access tokens ---------------------------------------------------------------------------------


class ClientListFilter(admin.RelatedFieldListFilter):
    """The client filter of the long lists (tokens, audit events): it offers the client a link chose
    (a client's page links to its tokens and its events), never every client, which a console with
    thousands of developers' clients would list on every page of these lists. Search finds any
    other client."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.title = "client"

    def field_choices(self, field, request, model_admin):
        chosen = [value for value in self.lookup_val or () if self.is_client_id(field, value)]
        if not chosen:
            return []
        return [(client.pk, str(client)) for client in field.related_model.objects.filter(pk__in=chosen)]

    def has_output(self) -> bool:
        # Django applies only the filters it shows: a chosen client that does not exist (deleted
        # since the link was made) would list every client's rows instead of none.
        return bool(self.lookup_val) or super().has_output()

    @staticmethod
    def is_client_id(field, value: str) -> bool:
        # clean(), not isdigit(): the validators hold the database's integer range, beyond which
        # the lookup overflows (OverflowError on SQLite, a 500).
        try:
            field.related_model._meta.pk.clean(value, None)
        except ValidationError:
            return False
        return True


class ActiveTokenFilter(admin.SimpleListFilter):
    """Active as introspection sees it: not expired, and its client enabled."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "active"), ("expired", "expired"), ("disabled", "client disabled")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(expires__gt=now, application__enabled=True)
        if self.value() == "expired":
            return queryset.filter(expires__lte=now)
        if self.value() == "disabled":
            return queryset.filter(expires__gt=now, application__enabled=False)
        return queryset


class AccessTokenAdmin(dot_admin.AccessTokenAdmin):
    """Tokens are read-only and never shown (only their hash is stored); revoking goes through services.
    Access tokens only: registration access tokens are stored in the same table (services.access_tokens)."""

    list_display = ("id", "application", "scope", "created", "expires", "active")
    list_filter = (ActiveTokenFilter, ("application", ClientListFilter))
    search_fields = ("application__client_id", "application__name", "scope")
    list_select_related = ("application",)
    fields = ("application", "scope", "created", "expires")
    readonly_fields = (*fields, "client")
    actions = ("revoke_tokens",)
    ordering = ("-created",)

    def get_queryset(self, request):
        return services.access_tokens(among=super().get_queryset(request))

    def get_fields(self, request, obj=None):
        # Django links a read-only client to its page: only for those who may open it.
        return self.fields if may_view(request, Application) else ("client", *self.fields[1:])

    @admin.display(description="client")
    def client(self, token):
        return token.application

    @admin.display(description="active", boolean=True)
    def active(self, token):
        return not token.is_expired() and token.application is not None and token.application.enabled

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return can_revoke_tokens(request)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # "Revoke selected access tokens" says what it does
        return actions

    @admin.action(description="Revoke selected access tokens", permissions=["delete"])
    def revoke_tokens(self, request, queryset):
        tokens = list(queryset.select_related("application"))
        with transaction.atomic():
            for token in tokens:
                self.delete_model(request, token)
        self.message_user(request, f"Revoked {counted(len(tokens), 'token')}.")

    def delete_model(self, request, obj):
        services.revoke_token(token=obj, actor=actor(request), remote_addr=remote_addr(request))

    @transaction.atomic
    def delete_queryset(self, request, queryset):
        for token in queryset.select_related("application"):
            self.delete_model(request, token)


class NotServedAdmin(admin.ModelAdmin):
    """For the DOT models of grants this server does not serve (authorization codes, refresh and
    ID tokens): there are never any rows, so the console does not show them."""

    def has_module_permission(self, request):
        return False

    def has_view_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- Scopes ----------------------------------------------------------------------------------------


@admin.register(Scope)
class ScopeAdmin(DeletedThroughTheService, admin.ModelAdmin):
    list_display = ("name", "description", "sandbox", "public", "clients")
    list_filter = ("sandbox", "public")
    search_fields = ("name", "description")
    fields = ("name", "description", "sandbox", "public")
    delete_confirmation_template = "admin/authserver/scope/delete_confirmation.html"
    delete_selected_confirmation_template = "admin/authserver/scope/delete_selected_confirmation.html"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(client_count=Count("applications"))

    def get_list_display(self, request):
        if may_view(request, Application):
            return self.list_display
        return [("client_count_column" if column == "clients" else column) for column in self.list_display]

    @admin.display(description="clients holding it", ordering="client_count")
    def client_count_column(self, scope: Scope):
        """The count, for those who may not open the client list it links to."""
        return scope.client_count

    def get_readonly_fields(self, request, obj=None):
        # Tokens and the APIs refer to a scope by name: renaming would silently change them.
        return ("name",) if obj is not None else ()

    @admin.display(description="clients holding it", ordering="client_count")
    def clients(self, scope: Scope):
        if not scope.client_count:
            return 0
        url = admin_url(Application, "changelist") + f"?allowed_scopes__id__exact={scope.pk}"
        return format_html('<a href="{}">{}</a>', url, scope.client_count)

    def get_deleted_objects(self, objs, request):
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        if protected:
            protected = self.holders(objs, linked=may_view(request, Application))
        return deleted, model_count, perms_needed, protected

    @staticmethod
    def holders(scopes, *, linked: bool) -> list[str]:
        """'client (client id) holds scope' lines, the clients linked to their pages for those who
        may open them."""
        holdings = (
            ClientScope.objects.filter(scope__in=scopes)
            .select_related("application", "scope")
            .order_by("scope__name", "application__name")
        )
        client = '<a href="{0}">{1}</a>' if linked else "{1}"
        return [
            format_html(
                client + ' <code>{2}</code> holds <code class="scope-name">{3}</code>',
                admin_url(Application, "change", holding.application.pk),
                isolated(holding.application),
                holding.application.client_id,
                holding.scope.name,
            )
            for holding in holdings
        ]

    def save_model(self, request, obj, form, change):
        services.save_scope(
            scope=obj,
            changed_fields=form.changed_data if change else (),
            actor=actor(request),
            remote_addr=remote_addr(request),
        )

    def delete_model(self, request, obj):
        services.delete_scope(scope=obj, actor=actor(request), remote_addr=remote_addr(request))


# --- Users ---------------------------------------------------------------------------------------


class UserAdmin(DeletedThroughTheService, auth_admin.UserAdmin):
    """Django's user admin, deleting through services.delete_user: the database's cascade would take
    the user's clients without a "client deleted" audit event. The delete page already lists those
    clients (and their tokens) among what goes with the user. Activating or deactivating goes
    through services.set_user_active: a deactivated user's clients are disabled with them."""

    # A username another account has in any case is refused (authserver/forms.py).
    form = ConsoleUserChangeForm
    add_form = ConsoleUserCreationForm
    # A group or permission id beyond the database's integer range is a field error, not a 500.
    formfield_overrides = {ManyToManyField: {"form_class": CheckedMultipleChoiceField}}
    # What an account may do in the console: a superuser's to set. Staff given the user permissions
    # (to deactivate developers, say) would otherwise make anyone, themselves too, a superuser.
    POWER_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")

    def get_readonly_fields(self, request, obj=None):
        readonly = super().get_readonly_fields(request, obj)
        return readonly if request.user.is_superuser else (*readonly, *self.POWER_FIELDS)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and self.may_manage(request, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and self.may_manage(request, obj)

    @staticmethod
    def may_manage(request, user) -> bool:
        """Whether this staff member may change or delete `user` (any, for None): a staff account
        only a superuser does, as a new password for it (user_change_password asks this) is that
        account, with its powers."""
        return user is None or request.user.is_superuser or not (user.is_staff or user.is_superuser)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except IntegrityError:
            # Another operator's account of this username, in any case, committed after this form
            # was checked: the unique index refused the save (and the transaction was rolled back).
            # The form, checked again, now says the username is taken.
            username = request.POST.get(get_user_model().USERNAME_FIELD, "")
            if request.method != "POST" or not users_named(username).exists():
                raise
            return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        # First, in the form's transaction: the user's row is locked before anything is written.
        disabled = None
        if change and "is_active" in form.changed_data:
            disabled = services.set_user_active(
                user=obj, active=obj.is_active, actor=actor(request), remote_addr=remote_addr(request)
            )
        # As stored before this save, for save_related to compare once the groups are saved too.
        form.powers_before = services.account_powers(obj) if change else None
        super().save_model(request, obj, form, change)
        # Told once saved: a save the username index refuses is rolled back, and so is what it did.
        if disabled is not None:
            self._tell_about_owned_clients(request, obj, disabled)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        services.user_saved(
            user=form.instance,
            before=form.powers_before,
            actor=actor(request),
            remote_addr=remote_addr(request),
        )

    def user_change_password(self, request, id, form_url=""):
        user = self.get_object(request, unquote(id))
        if user is None or request.method != "POST":
            return super().user_change_password(request, id, form_url)
        with transaction.atomic():
            before = services.account_powers(user)
            stored_password = user.password
            response = super().user_change_password(request, id, form_url)
            user.refresh_from_db(fields=["password"])
            if user.password != stored_password:
                services.user_saved(
                    user=user,
                    before=before,
                    password_changed=True,
                    actor=actor(request),
                    remote_addr=remote_addr(request),
                )
        return response

    def _tell_about_owned_clients(self, request, user, disabled: int) -> None:
        if not user.is_active:
            consequence = (
                f"Disabled {counted(disabled, 'client')} they own: the token endpoint refuses them and "
                "their tokens no longer work."
                if disabled
                else "They own no enabled client to disable."
            )
            self.message_user(request, f"“{user}” is deactivated. {consequence}", messages.WARNING)
            return
        still_disabled = Application.objects.filter(user=user, enabled=False).order_by("name", "pk")
        # Linked to their pages for those who may open them (a user manager need not).
        template = '<a href="{}">{}</a>' if may_view(request, Application) else "{1}"
        links = format_html_join(
            ", ",
            template,
            ((admin_url(Application, "change", client.pk), isolated(client)) for client in still_disabled),
        )
        if links:
            message = format_html(
                "“{}” is active again. Their disabled clients stay disabled until an operator "
                "enables each on its page, after review: {}.",
                user,
                links,
            )
            self.message_user(request, message, messages.WARNING)

    def delete_model(self, request, obj):
        services.delete_user(user=obj, actor=actor(request), remote_addr=remote_addr(request))


class GroupAdmin(DeletedThroughTheService, auth_admin.GroupAdmin):
    """Django's group admin, audited through services (group_saved, delete_group): a group's
    permissions are each member's console rights."""

    # A permission id beyond the database's integer range is a field error, not a 500.
    formfield_overrides = {ManyToManyField: {"form_class": CheckedMultipleChoiceField}}

    def get_readonly_fields(self, request, obj=None):
        # A superuser's to set, as a user's own permissions are (UserAdmin.POWER_FIELDS): staff
        # given the group permissions would otherwise give their own group every permission.
        readonly = super().get_readonly_fields(request, obj)
        return readonly if request.user.is_superuser else (*readonly, "permissions")

    def save_model(self, request, obj, form, change):
        # As stored before this save, for save_related to compare once the permissions are saved too.
        form.rights_before = services.group_rights(obj) if change else None
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        services.group_saved(
            group=form.instance,
            before=form.rights_before,
            actor=actor(request),
            remote_addr=remote_addr(request),
        )

    def delete_model(self, request, obj):
        services.delete_group(group=obj, actor=actor(request), remote_addr=remote_addr(request))


# django.contrib.auth (listed before this app) registered its own UserAdmin and GroupAdmin on the
# console.
admin.site.unregister(get_user_model())
admin.site.register(get_user_model(), UserAdmin)
admin.site.unregister(Group)
admin.site.register(Group, GroupAdmin)


# --- Audit trail -----------------------------------------------------------------------------------


def readable(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "none"
    if isinstance(value, list):
        return ", ".join(str(item).replace("_", " ") for item in value)
    if isinstance(value, dict):  # a client's settings before or after a change
        return "; ".join(f"{key.replace('_', ' ')}: {readable(item)}" for key, item in value.items())
    return str(value)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The audit trail: written by the services and the token endpoint, read here, never edited."""

    list_display = ("when", "kind", "client", "actor_column", "remote_addr", "summary")
    list_display_links = ("when",)
    list_filter = ("kind", ("application", ClientListFilter))
    search_fields = ("client_id", "application__name", "actor", "remote_addr")
    search_help_text = "Search by client id, client name, actor or address."
    date_hierarchy = "created"
    list_select_related = ("application",)
    show_full_result_count = False
    fields = ("created", "kind", "application", "client_id", "actor", "remote_addr", "details")
    readonly_fields = (*fields, "client_unlinked")

    # Links to a client's page only for those who may open it (Django links a read-only client too).
    def get_list_display(self, request):
        if may_view(request, Application):
            return self.list_display
        return [("client_unlinked" if column == "client" else column) for column in self.list_display]

    def get_fields(self, request, obj=None):
        if may_view(request, Application):
            return self.fields
        return [("client_unlinked" if field == "application" else field) for field in self.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="when", ordering="created")
    def when(self, event: AuditEvent):
        return moment(event.created)

    @admin.display(description="actor", ordering="actor")
    def actor_column(self, event: AuditEvent):
        return long_value(event.actor)

    @admin.display(description="client", ordering="client_id")
    def client(self, event: AuditEvent):
        if event.application_id is None:
            return long_value(event.client_id)
        return format_html(
            '<a href="{}" title="{}">{}</a>',
            admin_url(Application, "change", event.application_id),
            event.client_id,
            isolated(event.application),
        )

    @admin.display(description="client", ordering="client_id")
    def client_unlinked(self, event: AuditEvent):
        if event.application_id is None:
            return long_value(event.client_id)
        return format_html('<span title="{}">{}</span>', event.client_id, isolated(event.application))

    @admin.display(description="details")
    def summary(self, event: AuditEvent):
        return format_html_join(
            ", ",
            "{}: {}",
            # Values may be text a client chose (its name): isolated, as names are everywhere here.
            (
                (capfirst(key.replace("_", " ")), isolated(readable(value)))
                for key, value in event.detail.items()
            ),
        )

    @admin.display(description="details")
    def details(self, event: AuditEvent):
        return self.summary(event) or None
