"""Django's PostgreSQL backend (ENGINE "config.postgresql"), with health checks that skip a
connection which has just worked.

CONN_HEALTH_CHECKS pings a persistent connection (SELECT 1) before the first query of every
request, so that a connection the database dropped while the worker was idle is replaced instead of
failing a request. Under load that ping is one more round trip on every request, for connections
that answered a moment ago. Here a connection used without error in the last
HEALTH_CHECK_BYPASS_SECONDS is not pinged: a busy worker skips the ping, an idle one still pings
before its first query (the alive-bypass window of HikariCP, the JDBC pool). A connection that
breaks inside that window fails one request with a 503 and is replaced at its end, as Django does
without health checks.
"""

import time

from django.db.backends.postgresql import base

HEALTH_CHECK_BYPASS_SECONDS = 1.0


class DatabaseWrapper(base.DatabaseWrapper):
    _cursor_opened_at = float("-inf")

    def _cursor(self, name=None):
        cursor = super()._cursor(name)
        self._cursor_opened_at = time.monotonic()
        return cursor

    def close_if_health_check_failed(self):
        recently_fine = time.monotonic() - self._cursor_opened_at < HEALTH_CHECK_BYPASS_SECONDS
        if recently_fine and self.connection is not None and not self.errors_occurred:
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
