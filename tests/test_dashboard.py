"""The console's dashboard: tokens issued per hour and per day, and failed authentications, counted
from audit events with known timestamps."""

import importlib
import io
import re
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.db.models import Max
from django.test.utils import CaptureQueriesContext
from django.utils.html import escape
from oauth2_provider.models import AccessToken

from authserver import bidi, dashboard, services, sites
from authserver.models import Application, AuditEvent
from tests.helpers import HttpsClient, issue_token, make_client

NOW = datetime(2026, 3, 10, 12, 30, 15, tzinfo=UTC)


def events(kind, *moments, application=None, client_id=""):
    for moment in moments:
        services.record_event(kind=kind, application=application, client_id=client_id, actor="tests")
        AuditEvent.objects.filter(pk=AuditEvent.objects.latest("pk").pk).update(created=moment)


def issued(*moments, application=None):
    events(AuditEvent.Kind.TOKEN_ISSUED, *moments, application=application)


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC)


@pytest.fixture
def two_clients(db):
    return make_client(name="alpha").application, make_client(name="beta").application


def test_tokens_per_hour_counts_each_of_the_last_24_hours(two_clients):
    alpha, beta = two_clients
    issued(at(10, 12, 10), at(10, 12, 29), application=alpha)  # the current hour
    issued(at(10, 11, 59, 59), application=beta)
    issued(at(9, 13, 0), application=alpha)  # the first hour shown
    issued(at(9, 12, 59, 59), application=alpha)  # 25 hours ago: not shown
    issued(at(10, 12, 31), application=alpha)  # after "now": not shown
    events(AuditEvent.Kind.AUTH_FAILED, at(10, 12, 5), application=alpha)  # not an issued token

    overall = dashboard.tokens_issued_per_hour(now=NOW)
    for_beta = dashboard.tokens_issued_per_hour(now=NOW, application=beta)

    assert len(overall) == 24
    assert overall[0].start == at(9, 13)
    assert overall[-1].start == at(10, 12)
    counts = {bucket.start: bucket.count for bucket in overall if bucket.count}
    assert counts == {at(9, 13): 1, at(10, 11): 1, at(10, 12): 2}
    assert {bucket.start: bucket.count for bucket in for_beta if bucket.count} == {at(10, 11): 1}


def test_tokens_per_day_counts_each_of_the_last_30_days(two_clients):
    alpha, beta = two_clients
    issued(at(10, 0, 0), at(10, 12, 0), application=alpha)  # today, so far
    issued(at(9, 23, 59, 59), application=beta)
    issued(datetime(2026, 2, 9, 0, 0, tzinfo=UTC), application=alpha)  # 29 days ago: the first day
    issued(datetime(2026, 2, 8, 23, 59, tzinfo=UTC), application=alpha)  # 30 days ago: not shown

    overall = dashboard.tokens_issued_per_day(now=NOW)
    for_alpha = dashboard.tokens_issued_per_day(now=NOW, application=alpha)

    assert len(overall) == 30
    assert (overall[0].start, overall[-1].start) == (datetime(2026, 2, 9, tzinfo=UTC), at(10, 0))
    assert {bucket.start.date().isoformat(): bucket.count for bucket in overall if bucket.count} == {
        "2026-02-09": 1,
        "2026-03-09": 1,
        "2026-03-10": 2,
    }
    assert sum(bucket.count for bucket in for_alpha) == 3


def test_clients_with_the_most_failed_authentications(two_clients):
    alpha, beta = two_clients
    failed = AuditEvent.Kind.AUTH_FAILED
    events(failed, at(10, 12), at(10, 1), at(5, 8), application=alpha)  # 2 in the last day, 3 in all
    events(failed, at(10, 11), at(9, 13), at(9, 12), at(1, 0), application=beta)  # 2 / 4
    events(failed, at(10, 12, 20), client_id="made-up-id")  # no such client
    events(failed, datetime(2026, 2, 1, tzinfo=UTC), application=alpha)  # older than 30 days

    rows = dashboard.most_failed_authentications(now=NOW)

    assert [(row.client_id, row.last_day, row.total) for row in rows] == [
        (beta.client_id, 2, 4),
        (alpha.client_id, 2, 3),
        ("made-up-id", 1, 1),
    ]
    assert [row.application for row in rows] == [beta, alpha, None]
    assert rows[0].latest == at(10, 11)
    assert [row.client_id for row in dashboard.most_failed_authentications(now=NOW, limit=1)] == [
        beta.client_id
    ]
    assert dashboard.failed_authentication_count(now=NOW) == 5


def test_active_tokens_are_counted_until_they_expire(db, client):
    new_client = make_client()
    issue_token(client, new_client)
    issue_token(client, new_client)
    later = datetime.now(UTC) + timedelta(hours=2)

    assert dashboard.active_token_count(now=datetime.now(UTC)) == 2
    assert dashboard.active_token_count(now=datetime.now(UTC), application=new_client.application) == 2
    assert dashboard.active_token_count(now=later) == 0


def test_a_disabled_clients_tokens_are_not_counted_active(db, client):
    # Active as introspection and the token list's "active" filter see it: a disabled client's
    # tokens stop working at once.
    disabled, working = make_client(name="disabled"), make_client(name="working")
    issue_token(client, disabled)
    issue_token(client, working)
    services.set_client_enabled(application=disabled.application, enabled=False, actor="tests")
    now = datetime.now(UTC)

    assert dashboard.active_token_count(now=now) == 1
    assert dashboard.active_token_count(now=now, application=disabled.application) == 0
    assert dashboard.active_token_count(now=now, application=working.application) == 1


def test_registration_access_tokens_are_not_counted_active(db, client):
    # A dynamically registered client's RFC 7592 token is stored as an access token but is none.
    new_client = make_client()
    issue_token(client, new_client)
    services.issue_registration_token(application=new_client.application)
    now = datetime.now(UTC)

    assert dashboard.active_token_count(now=now) == 1
    assert dashboard.active_token_count(now=now, application=new_client.application) == 1


def test_bar_chart_scales_to_a_round_ceiling():
    buckets = [dashboard.Bucket(at(10, hour), count) for hour, count in enumerate([0, 3, 7, 1])]

    chart = dashboard.bar_chart(
        buckets, bar_label="%H:00", tick_label="%H", tick_every=2, width=444, height=224
    )

    assert (chart.total, chart.peak) == (11, 7)
    plot_height = chart.plot_bottom - 10  # top margin
    assert [bar.height for bar in chart.bars] == [
        0,
        round(plot_height * 3 / 10, 2),
        round(plot_height * 0.7, 2),
        19.0,
    ]
    assert all(bar.y + bar.height == pytest.approx(chart.plot_bottom) for bar in chart.bars)
    assert [tick.label for tick in chart.value_ticks] == ["0", "5", "10"]  # 7 rounds up to 10
    assert [tick.label for tick in chart.time_ticks] == ["00", "02"]
    assert chart.bars[1].label == "01:00"
    assert chart.bars[0].x < chart.bars[1].x < chart.bars[2].x < chart.bars[3].x < chart.plot_right


def test_bar_chart_of_nothing_is_flat():
    chart = dashboard.bar_chart(
        [dashboard.Bucket(at(10, hour), 0) for hour in range(24)],
        bar_label="%H",
        tick_label="%H",
        tick_every=6,
    )
    assert {bar.height for bar in chart.bars} == {0}
    assert [tick.label for tick in chart.value_ticks] == ["0", "1"]


# --- the page ------------------------------------------------------------------------------------


def now_well_inside_an_hour() -> datetime:
    """Now, at least 10 s before the next hour: the page's current hour is then the test's."""
    now = datetime.now(UTC)
    next_hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if next_hour - now < timedelta(seconds=10):
        time.sleep((next_hour - now).total_seconds() + 0.1)
        now = datetime.now(UTC)
    return now


def test_the_dashboard_draws_the_numbers_for_all_clients_and_for_one(console, two_clients):
    alpha, beta = two_clients
    now = now_well_inside_an_hour()
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    issued(now, this_hour, application=alpha)  # both in the current hour, whatever the minute
    issued(now - timedelta(hours=3), application=beta)
    issued(now - timedelta(days=3), application=beta)
    events(AuditEvent.Kind.AUTH_FAILED, now - timedelta(minutes=5), application=beta)

    overall = console.get("/admin/dashboard/")
    for_alpha = console.get(f"/admin/dashboard/?client={alpha.client_id}")

    assert overall.status_code == for_alpha.status_code == 200
    assert (overall.context["hourly"].total, overall.context["daily"].total) == (3, 4)
    assert (for_alpha.context["hourly"].total, for_alpha.context["daily"].total) == (2, 2)
    html = overall.content.decode()
    assert html.count('<rect class="bar"') == 24 + 30
    assert re.search(r"<title>[^<]+: 2 tokens</title>", html)  # the current hour
    assert "Most failed client authentications" in html
    assert f'href="/admin/authserver/application/{beta.pk}/change/"><bdi>beta</bdi></a>' in html
    alpha_html = for_alpha.content.decode()
    assert f'<option value="{alpha.client_id}" selected>' in alpha_html
    assert "Tokens issued per hour, last 24 hours (UTC): <bdi>alpha</bdi>" in alpha_html


def test_a_client_named_with_a_bidi_override_before_reorders_nothing_on_the_dashboard(console, db):
    """A name stored before bidi controls were refused is shown contained here too: U+202E
    (right-to-left override) in the headings would reverse the text after it, and in the page title
    (plain text) the site's name."""
    new_client = make_client(name="placeholder")
    name = "Evil\u202eecivres"
    Application.objects.filter(pk=new_client.application.pk).update(name=name)
    contained = escape(bidi.contained(name))

    page = console.get(f"/admin/dashboard/?client={new_client.application.client_id}").content.decode()

    assert f"<title>{contained} | " in page
    assert f"<h2>{contained}</h2>" in page
    assert f"Tokens issued per hour, last 24 hours (UTC): <bdi>{contained}</bdi>" in page
    assert f"Tokens issued per day, last 30 days (UTC): <bdi>{contained}</bdi>" in page
    assert escape(name) not in page.replace(contained, "")


def test_an_unknown_client_shows_all_clients_with_a_note(console, two_clients):
    response = console.get("/admin/dashboard/?client=nope")

    assert response.status_code == 200
    assert response.context["chosen"] is None
    assert "There is no client with that client id" in response.content.decode()


def test_a_dashboard_of_many_clients_takes_a_client_id_rather_than_listing_them_all(
    console, two_clients, monkeypatch
):
    """Every client in the picker made the page megabytes (20,000 sandbox clients: 2.3 MB, 3 s)."""
    alpha, beta = two_clients
    monkeypatch.setattr(sites, "DASHBOARD_LISTED_CLIENTS", 1)
    issued(datetime.now(UTC) - timedelta(minutes=1), application=alpha)

    overall = console.get("/admin/dashboard/").content.decode()
    for_alpha = console.get(f"/admin/dashboard/?client={alpha.client_id}")

    assert "<option" not in overall and beta.client_id not in overall
    assert '<input type="search" name="client" id="dashboard-client" value=""' in overall
    assert for_alpha.context["chosen"] == alpha
    assert for_alpha.context["hourly"].total == 1
    assert f'name="client" id="dashboard-client" value="{alpha.client_id}"' in for_alpha.content.decode()
    assert (
        "There is no client with that client id" in console.get("/admin/dashboard/?client=x").content.decode()
    )


def test_the_index_page_summarises_the_last_day(console, two_clients):
    alpha, _ = two_clients
    issued(datetime.now(UTC) - timedelta(minutes=1), application=alpha)
    events(AuditEvent.Kind.AUTH_FAILED, datetime.now(UTC) - timedelta(minutes=1), client_id="x")
    services.set_client_enabled(application=alpha, enabled=False, actor="tests")

    summary = console.get("/admin/").context["dashboard_summary"]

    assert summary == {
        "issued_last_day": 1,
        "active_tokens": 0,
        "failed_last_day": 1,
        "clients": 2,
        "disabled_clients": 1,
    }


def test_the_index_page_counts_tokens_of_the_whole_last_day(console, two_clients, monkeypatch):
    # Beside failed authentications, which count the last 24 hours to the second, not from the
    # start of the first hour the dashboard's hourly chart draws.
    alpha, _ = two_clients
    now = now_well_inside_an_hour()
    almost_a_day_ago = now - timedelta(hours=24) + timedelta(seconds=5)
    issued(almost_a_day_ago, application=alpha)
    events(AuditEvent.Kind.AUTH_FAILED, almost_a_day_ago, client_id="x")
    # The page's clock stopped at the test's: on a loaded machine its own could pass 5 s later.
    monkeypatch.setattr(sites, "timezone", SimpleNamespace(now=lambda: now))

    summary = console.get("/admin/").context["dashboard_summary"]

    assert (summary["issued_last_day"], summary["failed_last_day"]) == (1, 1)


def failed_authentications_of_a_made_up_client_id(console, alpha):
    """The dashboard's link to one client id's failed authentications, followed: the listing."""
    failed = AuditEvent.Kind.AUTH_FAILED
    now = datetime.now(UTC)
    events(failed, now - timedelta(minutes=2), now - timedelta(minutes=1), client_id="made-up-id")
    events(failed, now - timedelta(minutes=3), application=alpha, client_id=alpha.client_id)
    issued(now, application=alpha)
    link = re.search(r'href="([^"]*client_id=made-up-id)"', console.get("/admin/dashboard/").content.decode())
    return console.get(link[1].replace("&amp;", "&")).context["cl"]


def test_the_dashboard_links_to_a_client_ids_failed_authentications(console, two_clients):
    listing = failed_authentications_of_a_made_up_client_id(console, two_clients[0])

    assert [(event.kind, event.client_id) for event in listing.result_list] == [
        ("auth_failed", "made-up-id"),
        ("auth_failed", "made-up-id"),
    ]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite's planner keeps no statistics here")
def test_the_link_is_served_by_the_index_of_failed_authentications(console, two_clients):
    # The index for lookups by presented client id holds failed authentications only (a token issued
    # writes no entry to it), and the link's query is one it serves.
    listing = failed_authentications_of_a_made_up_client_id(console, two_clients[0])
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a few rows: PostgreSQL would read them all
        plan = listing.queryset.explain()

    assert "auditevent_auth_failed_client" in plan


MIGRATION_0004 = "authserver.migrations.0004_audit_failed_authentication_client_index"
NEW_INDEX, OLD_INDEX = "auditevent_auth_failed_client", "authserver__client__86759e_idx"


def index_state(name: str):
    """None: no such index; else whether it is valid."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [name])
        row = cursor.fetchone()
    return None if row is None else row[0]


def run_0004_forwards() -> list[str]:
    """The migration's database operation, run as `migrate` runs it (outside a transaction); the
    statements it ran that change the schema."""
    migration = importlib.import_module(MIGRATION_0004)
    replace = migration.replace_index(migration.BY_CLIENT_ID, migration.FAILED_AUTHENTICATIONS_BY_CLIENT_ID)
    ran = []

    def record(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith(("CREATE", "DROP", "UPDATE PG_INDEX")):
            ran.append(sql.strip().rstrip(";"))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record), connection.schema_editor(atomic=False) as editor:
        replace(apps, editor)
    return ran


@pytest.mark.skipif(connection.vendor != "postgresql", reason="CREATE INDEX CONCURRENTLY")
def test_the_index_is_replaced_without_locking_the_audit_trail_against_writes(transactional_db):
    # Every token issued writes an audit event: the migration builds and drops concurrently. Here
    # from the state before it: the old index, not the new one.
    with connection.cursor() as cursor:
        cursor.execute(f'DROP INDEX "{NEW_INDEX}"')
        cursor.execute(f'CREATE INDEX "{OLD_INDEX}" ON "authserver_auditevent" ("client_id", "created")')

    assert run_0004_forwards() == [
        f'CREATE INDEX CONCURRENTLY "{NEW_INDEX}" ON "authserver_auditevent" '
        '("client_id", "created") WHERE "kind" = \'auth_failed\'',
        f'DROP INDEX CONCURRENTLY IF EXISTS "{OLD_INDEX}"',
    ]
    assert (index_state(NEW_INDEX), index_state(OLD_INDEX)) == (True, None)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="CREATE INDEX CONCURRENTLY")
def test_the_index_migration_runs_again_after_an_interruption(transactional_db):
    """Not atomic: a build interrupted CONCURRENTLY leaves an invalid index behind, which PostgreSQL
    keeps up to date but never reads. Run again, the migration builds it anew; run once more, it
    builds nothing."""
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE INDEX "{OLD_INDEX}" ON "authserver_auditevent" ("client_id", "created")')
        cursor.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass(%s)", [NEW_INDEX]
        )
    assert index_state(NEW_INDEX) is False

    ran = run_0004_forwards()

    assert ran[0] == f'DROP INDEX CONCURRENTLY IF EXISTS "{NEW_INDEX}"'
    assert ran[1].startswith(f'CREATE INDEX CONCURRENTLY "{NEW_INDEX}"')
    assert (index_state(NEW_INDEX), index_state(OLD_INDEX)) == (True, None)
    assert run_0004_forwards() == [f'DROP INDEX CONCURRENTLY IF EXISTS "{OLD_INDEX}"']
    assert index_state(NEW_INDEX) is True


def test_only_users_who_may_read_the_audit_trail_see_the_dashboard(db):
    http = HttpsClient()
    http.force_login(get_user_model().objects.create_user("sam", password="x", is_staff=True))

    assert http.get("/admin/dashboard/").status_code == 403
    assert http.get("/admin/").context["dashboard_summary"] is None


@pytest.mark.skipif(connection.vendor != "postgresql", reason="ADD CONSTRAINT locks the table on PostgreSQL")
def test_the_foreign_keys_index_is_dropped_without_locking_the_audit_trail_against_writes(db):
    # AlterField would drop the foreign key and add it again, validating every audit event while
    # token issuance waits to write its own.
    printed = io.StringIO()
    call_command("sqlmigrate", "authserver", "0002", stdout=printed)

    assert "CONSTRAINT" not in printed.getvalue()


def test_the_dashboard_and_index_take_as_many_queries_with_many_rows_as_with_few(console, two_clients):
    """Counted by the database, each number in one query: more clients, tokens and events cost no
    more queries (a query per client or row would be a page that never loads on a busy server)."""
    alpha, beta = two_clients
    chosen = f"/admin/dashboard/?client={alpha.client_id}"
    pages = ("/admin/dashboard/", chosen, "/admin/")
    issued(datetime.now(UTC) - timedelta(minutes=1), application=alpha)
    events(AuditEvent.Kind.AUTH_FAILED, datetime.now(UTC) - timedelta(minutes=1), application=beta)

    def queries() -> list[int]:
        counts = []
        for page in pages:
            with CaptureQueriesContext(connection) as captured:
                assert console.get(page).status_code == 200
            counts.append(len(captured.captured_queries))
        return counts

    few = queries()
    now = datetime.now(UTC)
    last = Application.objects.aggregate(last=Max("pk"))["last"]
    Application.objects.bulk_create(
        Application(
            name=f"developer {number}",
            client_id=f"many-{number}",
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        )
        for number in range(200)
    )
    clients = list(Application.objects.filter(pk__gt=last))
    AccessToken.objects.bulk_create(
        AccessToken(
            application=client,
            token=f"token-{number}",
            token_checksum=f"{number:064x}",
            expires=now + timedelta(hours=1),
            scope="products:read",
        )
        for number, client in enumerate(clients * 3)
    )
    AuditEvent.objects.bulk_create(
        AuditEvent(
            kind=kind,
            application=client,
            client_id=client.client_id,
            created=now - timedelta(minutes=number * 7),
        )
        for number, client in enumerate(clients * 5)
        for kind in (AuditEvent.Kind.TOKEN_ISSUED, AuditEvent.Kind.AUTH_FAILED)
    )

    assert queries() == few
    summary = console.get("/admin/").context["dashboard_summary"]
    assert (summary["active_tokens"], summary["clients"]) == (600, 202)
