"""Profile one request kind in-process with pyinstrument (a dev dependency).

After `python -m bench.run` has left its database and credentials in var/bench/:
    DATABASE_URL=sqlite:///var/bench/bench.sqlite3 TLS=off DEBUG=off \
        python -m bench.profile token [--requests 500]
Same settings and middleware as the server, no network: what the worker's CPU goes to.
"""

import argparse
import json
import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.test import Client  # noqa: E402
from pyinstrument import Profiler  # noqa: E402

from bench.kinds import request_kinds  # noqa: E402
from bench.run import BENCH_DIR  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["floor", "token", "introspect", "products"])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--credentials", default=str(BENCH_DIR / "bench-credentials.json"))
    parser.add_argument("--time", action="store_true", help="no profiler: print CPU and wall ms per request")
    arguments = parser.parse_args()
    with open(arguments.credentials) as handle:
        credentials = json.load(handle)
    kind = next(kind for kind in request_kinds(credentials) if kind.name == arguments.kind)
    http = Client(REMOTE_ADDR="127.0.0.1", HTTP_HOST="127.0.0.1")
    for _ in range(20):  # warm: imports, connection, per-process caches
        response = kind.send_with(http)
    if response.status_code != 200:
        raise SystemExit(f"{kind.label}: HTTP {response.status_code} {response.content[:300]!r}")
    if arguments.time:
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(arguments.requests):
            kind.send_with(http)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        per_request = 1000 / arguments.requests
        print(f"{kind.name}: {cpu * per_request:.3f} ms CPU, {wall * per_request:.3f} ms wall per request")
        return
    profiler = Profiler(interval=0.0005)
    with profiler:
        for _ in range(arguments.requests):
            kind.send_with(http)
    print(profiler.output_text(unicode=True, color=False, show_all=os.environ.get("PROFILE_ALL") == "1"))


if __name__ == "__main__":
    main()
