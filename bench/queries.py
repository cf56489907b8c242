"""SQL queries per request kind, measured in-process with Django's CaptureQueriesContext.

Run by bench/run.py against the benchmark database with the server's settings:
    python -m bench.queries CREDENTIALS.json [--show-sql]
Each kind is requested twice and the second request is counted: the steady state a worker serves
under load (the first may fill per-process caches). Prints one JSON object {kind: count}.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from bench.kinds import request_kinds  # noqa: E402


def count_queries(credentials: dict, show_sql: bool = False) -> dict[str, int]:
    http = Client(REMOTE_ADDR="127.0.0.1", HTTP_HOST="127.0.0.1")
    counts = {}
    for kind in request_kinds(credentials):
        if kind.name == "products" and not credentials.get("products_available"):
            continue
        for _ in range(2):
            with CaptureQueriesContext(connection) as captured:
                response = kind.send_with(http)
        if response.status_code != 200:
            raise SystemExit(f"{kind.name}: HTTP {response.status_code} {response.content[:300]!r}")
        counts[kind.name] = len(captured.captured_queries)
        if show_sql:
            print(f"--- {kind.name}: {counts[kind.name]} queries", file=sys.stderr)
            for query in captured.captured_queries:
                print(f"    {query['sql'][:240]}", file=sys.stderr)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("credentials", help="JSON file written by bench/run.py")
    parser.add_argument("--show-sql", action="store_true", help="print each query to stderr")
    arguments = parser.parse_args()
    with open(arguments.credentials) as handle:
        credentials = json.load(handle)
    print(json.dumps(count_queries(credentials, arguments.show_sql)))


if __name__ == "__main__":
    main()
