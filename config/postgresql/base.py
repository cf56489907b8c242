"""Django's PostgreSQL backend (ENGINE "config.postgresql"), with health checks that skip a
connection which has just worked, a cursor kept for the hot path's statements, and statements run
again when PostgreSQL has forgotten the prepared statement psycopg ran them as.

CONN_HEALTH_CHECKS pings a persistent connection (SELECT 1) before the first query of every
request, so that a connection the database dropped while the worker was idle is replaced instead of
failing a request. Under load that ping is one more round trip on every request, for connections
that answered a moment ago. Here a connection used without error in the last
HEALTH_CHECK_BYPASS_SECONDS is not pinged: a busy worker skips the ping, an idle one still pings
before its first query (the alive-bypass window of HikariCP, the JDBC pool). A connection that
breaks inside that window fails one request with a 503 and is replaced at its end, as Django does
without health checks.

Prepared statements (DATABASE_PREPARED_STATEMENTS: psycopg prepares a statement run five times)
can be forgotten under a worker: a pooler's DISCARD ALL or a DEALLOCATE ALL ("prepared statement
... does not exist"), or made stale by a migration in another process changing a column's type
("cached plan must not change result type"). Such a statement did not run. Outside a transaction
(autocommit, no atomic block) the cursor deallocates every prepared statement of the connection,
which psycopg notices and forgets its own, and runs the statement once more, unprepared: the
request succeeds. The first forgotten statement of a request is usually one of those (the validity
epoch, the remembered lookups), so the statements of its transactions then run afresh too. Inside a
transaction the failure has aborted it: an OperationalError, which ProtocolErrorMiddleware answers
with a 503 and Retry-After; the transaction's rollback makes psycopg forget its prepared statements.
A statement that succeeds costs one Python call more: no round trip, no check.

A connection on which a statement failed is replaced when its request ends, not pinged and kept as
Django does: a new connection has no prepared statement psycopg could still believe in (one that
failed where it is not run again, in executemany()).

psycopg builds each new cursor's adapters and its loaders for every result column anew: 25-40 us of
CPU, a fifth of what a one-row statement costs a worker. `kept_cursor()` hands authserver.hotpath's
statements (the remembered lookups, the validity epoch, the catalogue page, a token's INSERT) one
cursor kept per connection, which keeps them (docs/benchmarks.md).
"""

import time
from contextlib import contextmanager

from django.db.backends.postgresql import base
from psycopg import OperationalError, errors
from psycopg.pq import TransactionStatus

HEALTH_CHECK_BYPASS_SECONDS = 1.0


def _prepared_statement_gone(error: errors.Error) -> bool:
    """Whether PostgreSQL refused a prepared statement it no longer has, or no longer can run."""
    if isinstance(error, errors.InvalidSqlStatementName):  # "prepared statement ... does not exist"
        return True
    return isinstance(error, errors.FeatureNotSupported) and (
        error.diag.message_primary == "cached plan must not change result type"
        or error.diag.source_function == "RevalidateCachedQuery"  # the same, in another lc_messages
    )


# psycopg's Cursor.execute, called directly: super() would cost every statement of the hot path.
_execute = base.ServerBindingCursor.execute


class ServerBindingCursor(base.ServerBindingCursor):
    """Django's cursor for server-side binding, which psycopg prepares statements on: a statement
    whose prepared statement PostgreSQL forgot is run once more outside a transaction, and is an
    OperationalError (a 503) inside one."""

    def execute(self, query, params=None, **options):
        try:
            return _execute(self, query, params, **options)
        except (errors.InvalidSqlStatementName, errors.FeatureNotSupported) as error:
            if self.pgresult is not None or not _prepared_statement_gone(error):
                raise  # another error, or one after the statement had run (a maintenance DEALLOCATE)
            if self.connection.info.transaction_status != TransactionStatus.IDLE:
                raise OperationalError(
                    f"The transaction was aborted: the database no longer had a statement prepared ({error})."
                ) from error
        # Not run, and in no transaction: nothing happened. psycopg forgets its prepared statements
        # when it sees DEALLOCATE ALL; the statement runs unprepared whatever it remembers.
        _execute(self, "DEALLOCATE ALL", prepare=False)
        return _execute(self, query, params, **{**options, "prepare": False})


class DatabaseWrapper(base.DatabaseWrapper):
    _cursor_opened_at = float("-inf")
    _kept_cursor = None

    def get_connection_params(self):
        params = super().get_connection_params()
        if params.get("cursor_factory") is base.ServerBindingCursor:
            params["cursor_factory"] = ServerBindingCursor
        return params

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
            self.close()  # a new connection has no prepared statement psycopg believes in
            return
        super().close_if_unusable_or_obsolete()

    def close_if_health_check_failed(self):
        recently_fine = time.monotonic() - self._cursor_opened_at < HEALTH_CHECK_BYPASS_SECONDS
        if recently_fine and self.connection is not None and not self.errors_occurred:
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
