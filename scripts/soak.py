"""The soak run (`make soak`): the whole site under steady load for a bounded time, loopback only.

    python scripts/soak.py [--seconds 60] [--connections 32] [--workers 4] [--max-growth-mib 10] [--tls]

It makes a throwaway deployment (a temporary VAR_DIR; with DATABASE_URL set, a throwaway database
`soak_<pid>` on that PostgreSQL server, dropped afterwards: your data is never touched), provisions
it with the real commands (`bootstrap`, `create_client`), starts gunicorn with production settings
on 127.0.0.1, and keeps `connections` requests in flight: token requests, Foo API calls (reads
and orders), introspection, readiness. Every 5 seconds it prints the request count, the errors and
each worker's resident memory.

It fails (exit 1) on any error (a status other than the expected one, a connection error, a
timeout), on a worker that died or was replaced, or when a worker's memory grew by more than
--max-growth-mib between the end of the warm-up (the first third of the run) and the end.
The token-requests-per-address limit is raised: all the load comes from one address, and a 429
would be the throttle working, not the server failing.
"""

import argparse
import base64
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import closing, contextmanager
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

PROJECT_DIR = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SAMPLE_SECONDS = 5


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def throwaway_database(database_url: str):
    """A new database on the PostgreSQL server of `database_url`, dropped afterwards; SQLite (no
    DATABASE_URL) lives in the temporary VAR_DIR instead."""
    if not database_url:
        yield ""
        return
    import psycopg

    name = f"soak_{os.getpid()}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(environment: dict, *arguments: str) -> str:
    completed = subprocess.run(  # noqa: S603 (this interpreter, fixed arguments)
        [str(BIN / "python"), "manage.py", *arguments],
        cwd=PROJECT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if completed.returncode != 0:
        sys.exit(f"manage.py {arguments[0]} failed:\n{completed.stdout}{completed.stderr}")
    return completed.stdout


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker_pids(master: int) -> list[int]:
    listing = subprocess.run(  # noqa: S603
        ["ps", "-o", "pid=", "--ppid", str(master)],  # noqa: S607 (procps, as tests/servers.py uses it)
        capture_output=True,
        text=True,
        check=False,
    )
    return sorted(int(pid) for pid in listing.stdout.split())


class Load:
    """`connections` threads, each keeping one request in flight until `stop_at`."""

    def __init__(self, *, host: str, port: int, tls_context, credentials: dict, stop_at: float):
        self.host, self.port, self.tls_context = host, port, tls_context
        self.credentials, self.stop_at = credentials, stop_at
        self.lock = threading.Lock()
        self.requests = 0
        self.errors: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()

    def connection(self) -> http.client.HTTPConnection:
        if self.tls_context is None:
            return http.client.HTTPConnection(self.host, self.port, timeout=30)
        return http.client.HTTPSConnection(self.host, self.port, timeout=30, context=self.tls_context)

    def requests_to_send(self) -> list[tuple[str, str, str, bytes, dict, int]]:
        """(kind, method, path, body, headers, expected status), weighted as clients call."""
        soak, resource = self.credentials["soak"], self.credentials["resource"]
        token_form = urlencode({"grant_type": "client_credentials"}).encode()
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        bearer = {"Authorization": f"Bearer {self.credentials['access_token']}"}
        order = json.dumps({"lines": [{"product": self.credentials["product"], "quantity": 1}]}).encode()
        token = ("token", "POST", "/oauth2/token", token_form, {**form, **basic(soak)}, 200)
        products = ("api read", "GET", "/api/v1/products", b"", bearer, 200)
        return [
            *[token] * 5,
            *[products] * 2,
            ("api read", "GET", "/api/v1/orders", b"", bearer, 200),
            (
                "api order",
                "POST",
                "/api/v1/orders",
                order,
                {**bearer, "Content-Type": "application/json"},
                201,
            ),
            (
                "introspect",
                "POST",
                "/oauth2/introspect",
                urlencode({"token": self.credentials["access_token"]}).encode(),
                {**form, **basic(resource)},
                200,
            ),
            ("readyz", "GET", "/readyz", b"", {}, 200),
        ]

    def run(self) -> None:
        mix = self.requests_to_send()
        while time.monotonic() < self.stop_at:
            kind, method, path, body, headers, expected = random.choice(mix)  # noqa: S311 (a request mix, not a secret)
            outcome = self.send(method, path, body, headers, expected)
            with self.lock:
                self.requests += 1
                self.kinds[kind] += 1
                if outcome:
                    self.errors[f"{kind}: {outcome}"] += 1

    def send(self, method: str, path: str, body: bytes, headers: dict, expected: int) -> str:
        """'' when the answer is the expected one, else what went wrong."""
        connection = self.connection()
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as error:
            return type(error).__name__
        finally:
            connection.close()
        if response.status != expected:
            return f"{response.status} {payload[:120]!r}"
        if not response.getheader("Content-Type", "").startswith("application/json"):
            return f"not JSON: {response.getheader('Content-Type')}"
        return ""


def basic(credentials: dict) -> dict:
    pair = f"{credentials['client_id']}:{credentials['client_secret']}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def provision(environment: dict) -> dict:
    manage(environment, "bootstrap")
    soak = json.loads(
        manage(
            environment,
            "create_client",
            "--name",
            "soak",
            "--scope",
            "products:read orders:read orders:write",
            "--json",
        )
    )
    resource = json.loads(
        manage(
            environment,
            "create_client",
            "--name",
            "soak resource server",
            "--scope",
            "introspection",
            "--json",
        )
    )
    return {"soak": soak, "resource": resource}


def first_token_and_product(host: str, port: int, tls_context, credentials: dict) -> dict:
    load = Load(host=host, port=port, tls_context=tls_context, credentials=credentials, stop_at=0)

    def call(method: str, path: str, body: bytes, headers: dict) -> dict:
        connection = load.connection()
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            return json.loads(response.read())
        finally:
            connection.close()

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    issued = call(
        "POST", "/oauth2/token", b"grant_type=client_credentials", {**form, **basic(credentials["soak"])}
    )
    products = call("GET", "/api/v1/products", b"", {"Authorization": f"Bearer {issued['access_token']}"})
    return {**credentials, "access_token": issued["access_token"], "product": products["results"][0]["id"]}


def wait_until_serving(host: str, port: int, tls_context, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"gunicorn exited early:\n{log.read_text(errors='replace')[-4000:]}")
        load = Load(host=host, port=port, tls_context=tls_context, credentials={}, stop_at=0)
        if load.send("GET", "/healthz", b"", {}, 200) == "":
            return
        time.sleep(0.3)
    sys.exit("gunicorn did not start within 60 s")


def soak(arguments) -> int:
    var_dir = Path(tempfile.mkdtemp(prefix="soak-"))
    port = free_port()
    host = "127.0.0.1"
    scheme = "https" if arguments.tls else "http"
    failures: list[str] = []
    try:
        with throwaway_database(os.environ.get("DATABASE_URL", "")) as database_url:
            environment = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(var_dir),
                "LANG": "C.UTF-8",
                "VAR_DIR": str(var_dir),
                "ISSUER": f"{scheme}://localhost:{port}",
                "BIND": f"{host}:{port}",
                "TLS": "on" if arguments.tls else "off",
                "WEB_CONCURRENCY": str(arguments.workers),
                "ACCESS_LOG": "off",
                "ADMIN_PASSWORD": secrets.token_urlsafe(16),
                "THROTTLE_TOKEN_REQUESTS_PER_MINUTE": "100000000",
            }
            if database_url:
                environment["DATABASE_URL"] = database_url
            backend = "PostgreSQL" if database_url else "SQLite"
            print(f"soak: provisioning a throwaway deployment on {backend} in {var_dir}", flush=True)
            credentials = provision(environment)
            tls_context = None
            if arguments.tls:
                tls_context = ssl.create_default_context(cafile=str(var_dir / "tls" / "cert.pem"))
                tls_context.check_hostname = False  # 127.0.0.1 is in the certificate; the name may not be

            log_path = var_dir / "gunicorn.log"
            with open(log_path, "wb") as log:
                server = subprocess.Popen(  # noqa: S603
                    [str(BIN / "gunicorn"), "-c", "config/gunicorn.conf.py"],
                    cwd=PROJECT_DIR,
                    env=environment,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                try:
                    wait_until_serving(host, port, tls_context, server, log_path)
                    credentials = first_token_and_product(host, port, tls_context, credentials)
                    failures = drive(arguments, host, port, tls_context, credentials, server.pid)
                finally:
                    os.killpg(server.pid, signal.SIGTERM)
                    try:
                        server.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        os.killpg(server.pid, signal.SIGKILL)
                        server.wait()
            if failures:
                tail = log_path.read_text(errors="replace")[-3000:]
                print(f"soak: gunicorn's log ends with:\n{tail}", flush=True)
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)

    for failure in failures:
        print(f"soak: FAILED: {failure}", flush=True)
    if not failures:
        print("soak: passed", flush=True)
    return 1 if failures else 0


def drive(arguments, host: str, port: int, tls_context, credentials: dict, master: int) -> list[str]:
    workers = worker_pids(master)
    started = time.monotonic()
    load = Load(
        host=host,
        port=port,
        tls_context=tls_context,
        credentials=credentials,
        stop_at=started + arguments.seconds,
    )
    threads = [threading.Thread(target=load.run, daemon=True) for _ in range(arguments.connections)]
    for thread in threads:
        thread.start()

    samples: list[tuple[float, dict[int, float]]] = []
    print(
        f"soak: {arguments.seconds} s, {arguments.connections} connections, {arguments.workers} workers "
        f"{workers}, {'HTTPS' if arguments.tls else 'HTTP'} on {host}:{port}",
        flush=True,
    )
    print(f"{'seconds':>7} {'requests':>9} {'per s':>7} {'errors':>7}  worker RSS (MiB)", flush=True)
    previous = 0
    while any(thread.is_alive() for thread in threads):
        time.sleep(min(SAMPLE_SECONDS, max(0.1, started + arguments.seconds - time.monotonic())))
        elapsed = time.monotonic() - started
        current = worker_pids(master)
        memory = {pid: rss_mib(pid) for pid in current}
        samples.append((elapsed, memory))
        with load.lock:
            count, errors = load.requests, sum(load.errors.values())
        rate = (count - previous) / SAMPLE_SECONDS
        previous = count
        rss = " ".join(f"{memory[pid]:6.1f}" for pid in sorted(memory))
        print(f"{elapsed:7.0f} {count:9d} {rate:7.0f} {errors:7d}  {rss}", flush=True)
        if elapsed >= arguments.seconds:
            break
    for thread in threads:
        thread.join(timeout=40)

    failures = []
    total_errors = sum(load.errors.values())
    print(f"soak: {load.requests} requests ({dict(load.kinds)}), {total_errors} errors", flush=True)
    if load.requests == 0:
        failures.append("no request was answered")
    for description, count in load.errors.most_common(10):
        failures.append(f"{count} x {description}")
    if worker_pids(master) != workers:
        failures.append(f"workers changed: {workers} -> {worker_pids(master)} (a worker died)")
    failures += memory_growth(samples, workers, arguments)
    return failures


def memory_growth(samples, workers: list[int], arguments) -> list[str]:
    """Per worker: RSS at the end of the warm-up (a third of the run) against the end."""
    warm = [memory for elapsed, memory in samples if elapsed >= arguments.seconds / 3]
    if len(warm) < 2:
        return ["too few memory samples: run longer"]
    failures = []
    for pid in workers:
        series = [memory[pid] for memory in warm if pid in memory]
        if len(series) < 2:
            continue
        baseline, final = series[0], statistics.median(series[-2:])
        growth = final - baseline
        print(f"soak: worker {pid}: {baseline:.1f} -> {final:.1f} MiB ({growth:+.1f})", flush=True)
        if growth > arguments.max_growth_mib:
            failures.append(f"worker {pid} grew {growth:.1f} MiB (limit {arguments.max_growth_mib} MiB)")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--max-growth-mib", type=float, default=10.0)
    parser.add_argument("--tls", action="store_true", help="serve HTTPS (default: plain HTTP on loopback)")
    arguments = parser.parse_args()
    if arguments.seconds > 600 or arguments.connections > 256:
        parser.error("a soak is bounded: at most 600 s and 256 connections")
    return soak(arguments)


if __name__ == "__main__":
    sys.exit(main())
