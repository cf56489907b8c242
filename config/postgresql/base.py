"""Django's PostgreSQL backend (ENGINE "config.postgresql"), with health checks that skip a
connection which has just worked, and a cursor kept for the hot path's statements.

CONN_HEALTH_CHECKS pings a persistent connection (SELECT 1) before the first query of every
request, so that a connection the database dropped while the worker was idle is replaced instead of
failing a request. Under load that ping is one more round trip on every request, for connections
that answered a moment ago. Here a connection used without error in the last
HEALTH_CHECK_BYPASS_SECONDS is not pinged: a busy worker skips the ping, an idle one still pings
before its first query (the alive-bypass window of HikariCP, the JDBC pool). A connection that
breaks inside that window fails one request with a 503 and is replaced at its end, as Django does
without health checks.

A connection on which a statement failed is replaced when its request ends, not pinged and kept as
Django does: psycopg forgets a prepared statement only when a transaction rolls back, so one
PostgreSQL invalidated under it (a migration in another process changing a column's type: "cached
plan must not change result type"; a pooler's DISCARD ALL: "prepared statement does not exist")
would fail every autocommit request that runs it, for as long as the connection lives.

psycopg builds each new cursor's adapters and its loaders for every result column anew: 25-40 us of
CPU, a fifth of what a one-row statement costs a worker. `kept_cursor()` hands authserver.hotpath's
statements (the remembered lookups, the validity epoch, the catalogue page, a token's INSERT) one
cursor kept per connection, which keeps them (docs/benchmarks.md).
"""

import time
from contextlib import contextmanager

from django.db.backends.postgresql import base

HEALTH_CHECK_BYPASS_SECONDS = 1.0


class DatabaseWrapper(base.DatabaseWrapper):
    _cursor_opened_at = float("-inf")
    _kept_cursor = None

    def _cursor(self, name=None):
        cursor = super()._cursor(name)
        self._cursor_opened_at = time.monotonic()
        return cursor

    @contextmanager
    def kept_cursor(self):
        """As `with connection.cursor() as cursor`, but the cursor is not closed afterwards: the next
        call on this connection gets it again, with the same health check and connection set-up
        first. While queries are logged (DEBUG, CaptureQueriesContext) a new cursor every time, the
        debug cursor that logs them. Callers fetch all of a statement's rows before leaving."""
        if self.queries_logged:
            with self.cursor() as cursor:
                yield cursor
            return
        self.close_if_health_check_failed()
        self.ensure_connection()
        kept = self._kept_cursor
        if kept is None or kept.cursor.closed or kept.cursor.connection is not self.connection:
            kept = self._kept_cursor = self.cursor()
        else:
            self._cursor_opened_at = time.monotonic()
        yield kept

    def _close(self):
        self._kept_cursor = None
        super()._close()

    def close_if_unusable_or_obsolete(self):
        if self.connection is not None and self.errors_occurred and not self.in_atomic_block:
            self.close()  # its prepared statements may be what failed: a new connection has none
            return
        super().close_if_unusable_or_obsolete()

    def close_if_health_check_failed(self):
        recently_fine = time.monotonic() - self._cursor_opened_at < HEALTH_CHECK_BYPASS_SECONDS
        if recently_fine and self.connection is not None and not self.errors_occurred:
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
