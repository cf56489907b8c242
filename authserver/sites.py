"""The management console: Django's admin site with a throttled login and a dashboard page.

It is the default admin site (authserver.apps.ConsoleAdminConfig), so every app's admin module, and
the django-oauth-toolkit admin classes named in settings, register on it. It registers nothing
itself: `admin.site` resolves to it while admin modules are being imported.
"""

import hashlib
from datetime import MAXYEAR, MINYEAR, date
from functools import wraps
from urllib.parse import unquote_plus

from django.contrib import admin, messages
from django.contrib.admin import actions, helpers
from django.contrib.admin.views.main import IGNORED_PARAMS
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import BadRequest, FieldDoesNotExist, PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import QuerySet, lookups
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache

from authserver import dashboard, services, throttling
from authserver.models import Application, AuditEvent
from authserver.throttling import LoginThrottleMixin

DASHBOARD_PERMISSION = f"{AuditEvent._meta.app_label}.view_auditevent"
DASHBOARD_LISTED_CLIENTS = 300


def _check_selected_ids(model, selected: list[str]) -> None:
    # clean(), not just to_python(): the field's validators also hold the database's integer range,
    # beyond which the query overflows (OverflowError on SQLite).
    try:
        for value in selected:
            model._meta.pk.clean(value, None)
    except ValidationError as invalid:
        raise BadRequest(f"A selected object is no {model._meta.verbose_name}.") from invalid


def _check_date_hierarchy(model_admin: admin.ModelAdmin, query) -> None:
    """Django's list turns a date hierarchy's year, month and day into a period [start, start of the
    next one) and catches only a ValueError while building the start: a 20-digit part overflows,
    and 9999 or 9999-12 has no next period datetime can hold. Refused: a date that does not exist,
    or one in datetime's first or last year (time zones and the next period may leave them)."""
    field = model_admin.date_hierarchy
    if not field or f"{field}__year" not in query:
        return
    # The last of repeated values, as Django's ChangeList takes them.
    year, month, day = (query.getlist(f"{field}__{part}", ["1"])[-1] for part in ("year", "month", "day"))
    try:
        if not MINYEAR < int(year) < MAXYEAR:
            raise ValueError(f"year {year} is out of range")
        date(int(year), int(month), int(day))
    except (ValueError, OverflowError) as invalid:
        raise BadRequest("The date hierarchy's date is no date.") from invalid


# What a list's filters put in its query string (field__exact, field__id__exact, field__isnull,
# field__gte and field__lt of a date filter) and the comparisons a hand-written link may add. Any
# other lookup is refused: Django's list applies every lookup on the model's own fields it is
# given, and many fail in the database on a value the client chose (an invalid regex, a year past
# 9999, a range of one value, an id beyond 64 bits in `__in`).
_COMPARISONS = {"exact", "iexact", "gt", "gte", "lt", "lte", "in"}
# Django's own text lookups only: a JSONField's `contains` compares JSON documents.
_TEXT_LOOKUPS = {
    lookups.Contains,
    lookups.IContains,
    lookups.StartsWith,
    lookups.IStartsWith,
    lookups.EndsWith,
    lookups.IEndsWith,
}
_TEXT_LOOKUP_NAMES = {lookup.lookup_name for lookup in _TEXT_LOOKUPS}
# Stored hashed: a lookup on one (client_secret__startswith=...) would read a hash out character by
# character, as Django's UserAdmin refuses for password.
_HASHED_FIELDS = {"client_secret", "token", "token_checksum", "password"}


def _check_lookups(model_admin: admin.ModelAdmin, request) -> None:
    """A list's query string holds the list's own parameters and lookups on the model's fields:
    a comparison with a value the field holds, a text lookup, or isnull."""
    own = set(IGNORED_PARAMS)
    for list_filter in model_admin.get_list_filter(request):
        if isinstance(list_filter, type) and issubclass(list_filter, admin.SimpleListFilter):
            own.add(list_filter.parameter_name)
    if model_admin.date_hierarchy:  # checked by _check_date_hierarchy
        own |= {f"{model_admin.date_hierarchy}__{part}" for part in ("year", "month", "day")}
    for name, values in request.GET.lists():
        if name in own:
            continue
        field, lookup = _lookup_target(model_admin.model, name)
        if field is None:  # no field of the model: Django's list answers it ("?e=1")
            continue
        if field.name in _HASHED_FIELDS:
            raise BadRequest(f"The list cannot be filtered by {name}.")
        if lookup == "isnull" or (lookup in _TEXT_LOOKUP_NAMES and field.get_lookup(lookup) in _TEXT_LOOKUPS):
            continue
        if lookup not in _COMPARISONS:
            raise BadRequest(f"The list cannot be filtered by {name}.")
        compared = values if lookup != "in" else [part for value in values for part in value.split(",")]
        try:
            for value in compared:
                field.run_validators(field.to_python(value))
        except ValidationError as invalid:
            raise BadRequest(f"The list cannot be filtered by {name} with that value.") from invalid


def _lookup_target(model, name: str):
    """(the field a query-string lookup compares, the lookup's name), or (None, "") when `name`
    starts with no field of `model`. A relation compares the key of the model it leads to."""
    field, parts = None, name.split("__")
    while parts:
        opts = model._meta
        try:
            next_field = opts.pk if parts[0] == "pk" else opts.get_field(parts[0])
        except FieldDoesNotExist:
            break
        field, model = next_field, next_field.related_model
        parts.pop(0)
        if model is None:  # not a relation: what follows is the lookup
            break
    if field is None:
        return None, ""
    if field.is_relation:
        forward = field.concrete and (field.many_to_one or field.one_to_one)
        field = field.target_field if forward else model._meta.pk
    return field, "__".join(parts) or "exact"


def selection_digest(queryset: QuerySet) -> str:
    """Which objects a "Select all N" confirmation showed, in one short value for its form to post."""
    ids = queryset.order_by("pk").values_list("pk", flat=True)
    return hashlib.sha256(",".join(str(pk) for pk in ids).encode()).hexdigest()


@admin.action(permissions=["delete"], description=actions.delete_selected.short_description)
def delete_selected(modeladmin: admin.ModelAdmin, request, queryset: QuerySet):
    """Django's "Delete selected", whose confirmation after "Select all N" on the list posts that
    again, not N ids: past DATA_UPLOAD_MAX_NUMBER_FIELDS (200) or the body limit they were a 400 page
    and nothing was deleted. It posts the selection's digest too: an object the list gained or lost
    since the page was shown (a sign-up, another operator's deletion) is not deleted unseen."""
    select_across = request.POST.get("select_across") == "1"
    digest = selection_digest(queryset) if select_across else None
    if select_across and request.POST.get("post") and request.POST.get("selection") != digest:
        message = "The list changed since the confirmation page was shown: nothing was deleted. Select again."
        modeladmin.message_user(request, message, messages.ERROR)
        return None
    response = actions.delete_selected(modeladmin, request, queryset)
    if select_across and isinstance(response, TemplateResponse):
        response.context_data.update(select_across=True, selection=digest)
    return response


class SiteLogin(View):
    """An admin site's own login (AdminSite.login) as a class view, for mixins to wrap."""

    site_login = None
    extra_context = None

    def get(self, request):
        return self.site_login(request, self.extra_context)

    def post(self, request):
        return self.site_login(request, self.extra_context)


class AuditedSiteLogin(SiteLogin):
    """Each login to the console, and each attempt that failed, is recorded in the audit trail."""

    def post(self, request):
        response = super().post(request)
        services.record_console_login(
            presented_username=request.POST.get("username", ""),
            user=request.user if throttling.logged_in_by(request) else None,
            remote_addr=throttling.client_address(request.META) or None,
        )
        return response


class ThrottledSiteLogin(LoginThrottleMixin, AuditedSiteLogin):
    """Too many failed logins for a username or from an address are answered 429 unchecked (and
    not recorded: no password was checked)."""


class ConsoleAdminSite(admin.AdminSite):
    site_header = "Foo authorization server"
    site_title = "Foo console"
    index_title = "Management console"
    # The client and audit lists are wide; the index and breadcrumbs are navigation enough.
    enable_nav_sidebar = False

    def __init__(self, name="admin"):
        super().__init__(name)
        self.add_action(delete_selected, "delete_selected")  # for every model, in place of Django's

    @method_decorator(never_cache)
    @login_not_required
    def login(self, request, extra_context=None):
        return ThrottledSiteLogin.as_view(site_login=super().login, extra_context=extra_context)(request)

    def password_change(self, request, extra_context=None):
        """Django's, with the new password and its audit event saved together, and wrong current
        passwords counted as failed logins of the account (as the portal's password change does): a
        console session left open is no way to guess its password without limit."""
        if request.method != "POST":
            return super().password_change(request, extra_context)
        limits = throttling.login_failure_limits(request, request.user.get_username())
        if wait := throttling.longest_wait(*limits):
            return throttling.too_many_attempts(request, wait)
        with transaction.atomic():
            before = services.account_powers(request.user)
            stored_password = request.user.password
            response = super().password_change(request, extra_context)
            if request.user.password != stored_password:
                services.user_saved(
                    user=request.user,
                    before=before,
                    password_changed=True,
                    actor=f"user:{request.user.get_username()}",
                    remote_addr=throttling.client_address(request.META) or None,
                )
        form = (getattr(response, "context_data", None) or {}).get("form")
        if form is not None and form.has_error("old_password", "password_incorrect"):
            throttling.record_failure(limits)
        return response

    def admin_view(self, view, cacheable=False):
        """Every console page, with what it would pass to the database unchecked refused with a 400
        page rather than a 500: a query string with a NUL character (the lists' filters compare
        their parameters in the database, and PostgreSQL cannot compare a NUL), a date hierarchy
        period that is no date or whose next period datetime cannot hold, a list lookup other than
        a comparison with a value its field holds, a text lookup or isnull, and an action on
        "selected objects" that are no ids of the list's model (Django's queryset.filter(pk__in=...)
        raises ValueError for `_selected_action=x`, OverflowError for an id beyond 64 bits)."""
        protected = super().admin_view(view, cacheable)
        model_admin = getattr(view, "__self__", None)  # a ModelAdmin's own view, or the site's
        if not isinstance(model_admin, admin.ModelAdmin):
            model_admin = None
        is_list = model_admin is not None and view.__name__ == "changelist_view"

        @wraps(protected)
        def checked(request, *args, **kwargs):
            if "\x00" in unquote_plus(request.META.get("QUERY_STRING", "")):
                raise BadRequest("A NUL character in the query string.")
            if model_admin is not None:
                _check_date_hierarchy(model_admin, request.GET)
            if is_list:
                _check_lookups(model_admin, request)
                if request.method == "POST" and "action" in request.POST:
                    selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
                    _check_selected_ids(model_admin.model, selected)
            return protected(request, *args, **kwargs)

        return checked

    def get_urls(self):
        dashboard_url = path("dashboard/", self.admin_view(self.dashboard_view), name="dashboard")
        return [dashboard_url, *super().get_urls()]

    def get_app_list(self, request, app_label=None):
        # The authorization server's own models first: they are what operators come for.
        apps = super().get_app_list(request, app_label)
        first = Application._meta.app_label
        return sorted(apps, key=lambda app: app["app_label"] != first)

    def dashboard_view(self, request):
        if not request.user.has_perm(DASHBOARD_PERMISSION):
            raise PermissionDenied
        now = timezone.now()
        clients = Application.objects.order_by("name", "client_id").only("name", "client_id")
        # Listed up to DASHBOARD_LISTED_CLIENTS; beyond (a portal's thousands of sandbox clients, a
        # page of megabytes on every view), a client is chosen by its id.
        listed = list(clients[: DASHBOARD_LISTED_CLIENTS + 1])
        chosen_id = request.GET.get("client", "")
        chosen = clients.filter(client_id=chosen_id).first() if chosen_id else None
        per_hour = dashboard.tokens_issued_per_hour(now=now, application=chosen)
        per_day = dashboard.tokens_issued_per_day(now=now, application=chosen)
        context = {
            **self.each_context(request),
            "title": "Dashboard",
            "subtitle": str(chosen) if chosen else "All clients",  # str(): a stored name, contained
            "now": now,
            "clients": listed if len(listed) <= DASHBOARD_LISTED_CLIENTS else None,
            "chosen": chosen,
            "chosen_id": chosen_id,
            "unknown_client": bool(chosen_id) and chosen is None,
            "hourly": dashboard.bar_chart(
                per_hour, bar_label="%d %b %H:00", tick_label="%H:00", tick_every=3
            ),
            "daily": dashboard.bar_chart(per_day, bar_label="%a %d %b", tick_label="%d %b", tick_every=5),
            "active_tokens": dashboard.active_token_count(now=now, application=chosen),
            "failed": dashboard.most_failed_authentications(now=now),
            # Links to a client's page only for those who may open it (ModelAdmin.has_view_permission).
            "can_view_clients": self.get_model_admin(Application).has_view_permission(request),
        }
        request.current_app = self.name
        return TemplateResponse(request, "admin/dashboard.html", context)

    def dashboard_summary(self, request) -> dict | None:
        """The few numbers the index page shows, for users who may see the dashboard."""
        if not request.user.has_perm(DASHBOARD_PERMISSION):
            return None
        now = timezone.now()
        return {
            "issued_last_day": dashboard.tokens_issued_count(now=now),
            "active_tokens": dashboard.active_token_count(now=now),
            "failed_last_day": dashboard.failed_authentication_count(now=now),
            "clients": Application.objects.count(),
            "disabled_clients": Application.objects.filter(enabled=False).count(),
        }

    def index(self, request, extra_context=None):
        extra_context = {"dashboard_summary": self.dashboard_summary(request), **(extra_context or {})}
        return super().index(request, extra_context)
