"""The numbers on the console's dashboard, read from the audit trail, and the charts that draw them.

Plain functions of (`now`, optional client) so tests can pin the clock; the view only renders.
Buckets are UTC hours and days, each [start, start + step), the last one being the current one.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Count, Max, Q
from django.db.models.functions import TruncDay, TruncHour

from authserver import services
from authserver.models import Application, AuditEvent

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Bucket:
    start: datetime
    count: int


@dataclass(frozen=True)
class FailedAuthentications:
    """Failed client authentications for one presented client id (which may name no client)."""

    client_id: str
    application: Application | None
    last_day: int
    total: int
    latest: datetime


def _issued(application: Application | None, start: datetime, now: datetime):
    events = AuditEvent.objects.filter(
        kind=AuditEvent.Kind.TOKEN_ISSUED, created__gte=start, created__lte=now
    )
    return events if application is None else events.filter(application=application)


def _buckets(truncate, step: timedelta, first: datetime, count: int, application, now) -> list[Bucket]:
    per_bucket = dict(
        _issued(application, first, now)
        .annotate(bucket=truncate("created", tzinfo=UTC))
        .order_by()
        .values_list("bucket")
        .annotate(total=Count("id"))
    )
    starts = (first + step * index for index in range(count))
    return [Bucket(start, per_bucket.get(start, 0)) for start in starts]


def tokens_issued_per_hour(*, now: datetime, application: Application | None = None, hours: int = 24):
    """Tokens issued in each of the last `hours` hours, the current (partial) hour last."""
    current_hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return _buckets(TruncHour, HOUR, current_hour - HOUR * (hours - 1), hours, application, now)


def tokens_issued_per_day(*, now: datetime, application: Application | None = None, days: int = 30):
    """Tokens issued on each of the last `days` days (UTC), today (so far) last."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return _buckets(TruncDay, DAY, today - DAY * (days - 1), days, application, now)


def active_token_count(*, now: datetime, application: Application | None = None) -> int:
    """Access tokens active as introspection sees them (and the token list's "active" filter): not
    expired, and their client enabled."""
    tokens = services.access_tokens().filter(expires__gt=now, application__enabled=True)
    return (tokens if application is None else tokens.filter(application=application)).count()


def tokens_issued_count(*, now: datetime, hours: int = 24) -> int:
    """Tokens issued in the last `hours` hours to the second (the hourly chart starts at the top of
    its first hour), as failed_authentication_count counts."""
    return AuditEvent.objects.filter(
        kind=AuditEvent.Kind.TOKEN_ISSUED, created__gt=now - HOUR * hours, created__lte=now
    ).count()


def failed_authentication_count(*, now: datetime, hours: int = 24) -> int:
    return AuditEvent.objects.filter(
        kind=AuditEvent.Kind.AUTH_FAILED, created__gt=now - HOUR * hours, created__lte=now
    ).count()


def most_failed_authentications(
    *, now: datetime, days: int = 30, limit: int = 10
) -> list[FailedAuthentications]:
    """The client ids with the most failed authentications in the last `days` days, most first."""
    since_day = now - DAY
    rows = list(
        AuditEvent.objects.filter(
            kind=AuditEvent.Kind.AUTH_FAILED, created__gt=now - DAY * days, created__lte=now
        )
        .order_by()
        .values("client_id")
        .annotate(
            total=Count("id"),
            last_day=Count("id", filter=Q(created__gt=since_day)),
            latest=Max("created"),
        )
        .order_by("-total", "-latest", "client_id")[:limit]
    )
    clients = Application.objects.in_bulk(
        [row["client_id"] for row in rows if row["client_id"]], field_name="client_id"
    )
    return [
        FailedAuthentications(
            client_id=row["client_id"],
            application=clients.get(row["client_id"]),
            last_day=row["last_day"],
            total=row["total"],
            latest=row["latest"],
        )
        for row in rows
    ]


# --- Charts: bars laid out in SVG user units; the template draws them ----------------------------


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    count: int
    label: str  # for the tooltip, e.g. "2026-01-05 14:00"


@dataclass(frozen=True)
class Tick:
    position: float  # x for time ticks, y for value ticks
    label: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    plot_left: int
    plot_bottom: int
    plot_right: int
    bars: list[Bar]
    value_ticks: list[Tick]
    time_ticks: list[Tick]
    total: int
    peak: int


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50... not below `value`, so that axis labels read well."""
    if value <= 1:
        return 1
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= value:
                return step * magnitude
        magnitude *= 10


def bar_chart(
    buckets: list[Bucket], *, bar_label: str, tick_label: str, tick_every: int, width=720, height=220
) -> BarChart:
    """Bars for `buckets`; every `tick_every`-th bucket gets a time label formatted with `tick_label`."""
    left, right, top, bottom = 44, 8, 10, height - 24
    peak = max((bucket.count for bucket in buckets), default=0)
    scale_top = _nice_ceiling(peak)
    slot = (width - left - right) / max(len(buckets), 1)
    gap = min(2.0, slot * 0.2)
    bars, time_ticks = [], []
    for index, bucket in enumerate(buckets):
        bar_height = (bottom - top) * bucket.count / scale_top
        x = left + index * slot
        bars.append(
            Bar(
                x=round(x + gap / 2, 2),
                y=round(bottom - bar_height, 2),
                width=round(slot - gap, 2),
                height=round(bar_height, 2),
                count=bucket.count,
                label=bucket.start.strftime(bar_label),
            )
        )
        if index % tick_every == 0:
            time_ticks.append(Tick(round(x + slot / 2, 2), bucket.start.strftime(tick_label)))
    value_ticks = [
        Tick(round(bottom - (bottom - top) * fraction, 2), f"{scale_top * fraction:g}")
        for fraction in (0, 0.5, 1)
        if fraction == 0 or scale_top * fraction == int(scale_top * fraction)
    ]
    return BarChart(
        width=width,
        height=height,
        plot_left=left,
        plot_bottom=bottom,
        plot_right=width - right,
        bars=bars,
        value_ticks=value_ticks,
        time_ticks=time_ticks,
        total=sum(bucket.count for bucket in buckets),
        peak=peak,
    )
