"""The benchmark (`make bench`): this site under load, each row as a ratio to a bare Django view.

    python -m bench.run [--seconds 10] [--connections 16,64] [--scale-tokens 1000000] [--cleanup]

It makes a fresh benchmark database (var/bench/bench.sqlite3, or `<name>_bench` on the PostgreSQL
server of DATABASE_URL: your own data is never touched), provisions it with the real commands
(`bootstrap`, `create_client`), starts gunicorn with production settings (DEBUG off, one sync
worker per core, plain HTTP on 127.0.0.1, rate limits raised so they never refuse the load but
still count every request), and drives each row with wrk (or bench/loadgen.py when wrk is absent).
The floor is GET /healthz: a Django JSON view through the same middleware, no OAuth, no database.
It is measured before the first row and again after each row, and each row's ratio is to the floor
runs just before and after it (a shared machine's speed drifts during a run).
"""

import argparse
import datetime
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

from bench.kinds import RequestKind, basic, request_kinds

PROJECT_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", PROJECT_DIR / "var"))
BENCH_DIR = VAR_DIR / "bench"
BIN_DIR = Path(sys.executable).parent
WRK_SCRIPT = Path(__file__).with_name("wrk.lua")
# Ratios to the floor the issue asks for (issue 5, "Targets").
TARGETS = {
    ("token", "sqlite"): 0.35,
    ("token", "postgresql"): 0.25,
    ("introspect", "sqlite"): 0.4,
    ("introspect", "postgresql"): 0.4,
    ("products", "sqlite"): 0.5,
    ("products", "postgresql"): 0.5,
}
# A token request's p99 may be at most this many times its p50.
TOKEN_P99_OVER_P50 = 5


@dataclass
class Row:
    kind: str
    label: str
    connections: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    requests: int
    spread: tuple[float, float] = (0.0, 0.0)  # min and max req/s over --repeat runs
    ratio: float | None = None
    cpu_ms: float | None = None  # server CPU (all gunicorn processes) per request
    cpu_ratio: float | None = None  # floor's CPU per request / this row's: the ratio on idle cores
    floor_around: tuple[float, float] = (0.0, 0.0)  # the floor's req/s just before and after this row


# --- the machine ---------------------------------------------------------------------------------


def machine_description() -> dict:
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        memory_kib = 0
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count() or 1,
        "cpu": cpu_model,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "load_average": load_average(),
    }


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


# --- the database --------------------------------------------------------------------------------


def bench_database(base_url: str, name: str) -> tuple[str, str]:
    """A fresh, empty database for this run: (DATABASE_URL, engine name)."""
    if not base_url or base_url.startswith("sqlite"):
        path = BENCH_DIR / f"{name}.sqlite3"
        drop_database(f"sqlite:///{path}")
        return f"sqlite:///{path}", "sqlite"
    parts = urlsplit(base_url)
    bench_url = urlunsplit(parts._replace(path=f"/{parts.path.lstrip('/') or 'postgres'}_{name}"))
    drop_database(bench_url, admin_url=base_url)
    with postgres_admin(base_url) as admin:
        admin.execute(f'CREATE DATABASE "{urlsplit(bench_url).path.lstrip("/")}"')
    return bench_url, "postgresql"


def drop_database(url: str, admin_url: str | None = None) -> None:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm", "-epoch"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    with postgres_admin(admin_url or url) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" WITH (FORCE)')


@contextmanager
def postgres_admin(url: str):
    """A connection to the server's `postgres` database, for CREATE and DROP DATABASE."""
    import psycopg  # only needed for PostgreSQL

    with psycopg.connect(urlunsplit(urlsplit(url)._replace(path="/postgres")), autocommit=True) as admin:
        yield admin


def server_environment(database_url: str, port: int, workers: int) -> dict:
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DEBUG": "off",
        "TLS": "off",
        "ACCESS_LOG": "off",
        "LOG_LEVEL": "WARNING",
        "BIND": f"127.0.0.1:{port}",
        "ISSUER": f"http://127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(workers),
        # The limiter still counts every token request; it just never reaches its limit here.
        "THROTTLE": "on",
        "THROTTLE_TOKEN_REQUESTS_PER_MINUTE": "1000000000",
        "ADMIN_PASSWORD": os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(16),
        "PYTHONUNBUFFERED": "1",
    }
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    return environment


def manage(environment: dict, *arguments: str) -> str:
    completed = subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=PROJECT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(arguments)} failed:\n{completed.stdout}{completed.stderr}")
    return completed.stdout


def provision(environment: dict) -> dict:
    """Tables and default data through `bootstrap`, the two clients through `create_client`."""
    manage(environment, "bootstrap")
    token_client = json.loads(
        manage(environment, "create_client", "--name", "bench", "--scope", "products:read", "--json")
    )
    resource_server = json.loads(
        manage(
            environment,
            "create_client",
            "--name",
            "bench resource server",
            "--scope",
            "introspection",
            "--json",
        )
    )
    return {"token_client": token_client, "resource_server": resource_server}


# --- the server ----------------------------------------------------------------------------------


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def gunicorn(environment: dict, base_url: str, name: str):
    log_path = BENCH_DIR / f"{name}-server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(BIN_DIR / "gunicorn"), "-c", "config/gunicorn.conf.py"],
            cwd=PROJECT_DIR,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until_ready(process, base_url, log_path)
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


class ServerCPU:
    """CPU seconds used so far by gunicorn and its workers (/proc): a measure other load barely moves."""

    def __init__(self, process):
        self.master = process.pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def seconds(self) -> float:
        pids = [self.master]
        try:
            for task in Path(f"/proc/{self.master}/task").iterdir():
                pids += [int(pid) for pid in (task / "children").read_text().split()]
        except OSError:
            return 0.0
        ticks = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # a worker that just exited
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / self.tick


def wait_until_ready(process, base_url: str, log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited early:\n{log_path.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer within {timeout}s:\n{log_path.read_text(errors='replace')}")


def http(base_url: str, kind_or_path, *, method="GET", body="", authorization="") -> tuple[int, bytes]:
    if isinstance(kind_or_path, RequestKind):
        kind = kind_or_path
        method, path, body, authorization = kind.method, kind.path, kind.body, kind.authorization
    else:
        path = kind_or_path
    headers = {"Authorization": authorization} if authorization else {}
    if body:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    request = urllib.request.Request(
        base_url + path, data=body.encode() if body else None, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def fetch_access_token(base_url: str, token_client: dict) -> str:
    status, body = http(
        base_url,
        "/oauth2/token",
        method="POST",
        body=urlencode({"grant_type": "client_credentials"}),
        authorization=basic(token_client["client_id"], token_client["client_secret"]),
    )
    if status != 200:
        raise SystemExit(f"The token endpoint answered {status}: {body[:300]!r}")
    return json.loads(body)["access_token"]


# --- load ----------------------------------------------------------------------------------------


def generator_name(generator: str) -> str:
    wrk = shutil.which("wrk") if generator != "python" else None
    if wrk:
        version = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False).stdout
        return f"wrk ({(version.splitlines() or ['wrk'])[0].split(' Copyright')[0].strip()})"
    reason = "asked for" if generator == "python" else "wrk not found"
    return f"bench/loadgen.py (Python asyncio; {reason})"


def drive(
    base_url: str, kind: RequestKind, connections: int, seconds: float, threads: int, generator: str
) -> dict:
    """One load run; wrk's summary (or the same fields from bench/loadgen.py)."""
    wrk = shutil.which("wrk") if generator != "python" else None
    if wrk is None:
        from bench import loadgen

        parts = urlsplit(base_url)
        return loadgen.run_load(
            host=parts.hostname,
            port=parts.port,
            method=kind.method,
            path=kind.path,
            body=kind.body,
            authorization=kind.authorization,
            connections=connections,
            seconds=seconds,
        )
    environment = {
        **os.environ,
        "BENCH_METHOD": kind.method,
        "BENCH_BODY": kind.body,
        "BENCH_AUTHORIZATION": kind.authorization,
    }
    command = [
        wrk, "-t", str(min(threads, connections)), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
        "--timeout", "10s", "-s", str(WRK_SCRIPT), base_url + kind.path,
    ]  # fmt: skip
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    return parse_wrk_output(completed.stdout, completed.stderr)


def parse_wrk_output(stdout: str, stderr: str = "") -> dict:
    for line in stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line.removeprefix("BENCH_RESULT "))
    raise SystemExit(f"wrk printed no result:\n{stdout}\n{stderr}")


def summary_errors(summary: dict) -> int:
    return sum(
        summary[name]
        for name in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )


def measure(base_url, kind, connections, options, server_cpu: ServerCPU) -> Row:
    if options.warmup > 0:
        drive(base_url, kind, connections, options.warmup, options.threads, options.generator)
    cpu_before = server_cpu.seconds()
    runs = [
        drive(base_url, kind, connections, options.seconds, options.threads, options.generator)
        for _ in range(options.repeat)
    ]
    cpu_seconds = server_cpu.seconds() - cpu_before
    rates = [run["requests"] / (run["duration_us"] / 1e6) for run in runs]
    middle = runs[rates.index(statistics.median_high(rates))]
    return Row(
        kind=kind.name,
        label=kind.label,
        connections=connections,
        requests_per_second=statistics.median_high(rates),
        p50_ms=middle["p50_us"] / 1000,
        p99_ms=middle["p99_us"] / 1000,
        max_ms=middle["max_us"] / 1000,
        errors=sum(summary_errors(run) for run in runs),
        requests=sum(run["requests"] for run in runs),
        spread=(min(rates), max(rates)),
        cpu_ms=1000 * cpu_seconds / max(1, sum(run["requests"] for run in runs)),
    )


def measure_rows(base_url, kinds, options, server_cpu, progress) -> list[Row]:
    """Each row, with the floor measured before the first and again after every row: the speed of
    a shared machine drifts during a run, so a row's ratio is to the floor just around it (the
    mean of the floor runs before and after it). The floor's own row is the median of its runs."""
    floor_kind = next(kind for kind in kinds if kind.name == "floor")
    rows = []
    for connections in options.connections:

        def run(kind: RequestKind, connections: int = connections) -> Row:
            progress(f"  {kind.label} at {connections} connections ...")
            return measure(base_url, kind, connections, options, server_cpu)

        floors, measured = [run(floor_kind)], []
        for kind in kinds:
            if kind is floor_kind:
                continue
            row = run(kind)
            floors.append(run(floor_kind))
            around = floors[-2:]
            row.floor_around = tuple(floor.requests_per_second for floor in around)
            row.ratio = row.requests_per_second / statistics.mean(row.floor_around)
            floor_cpu_ms = statistics.mean(floor.cpu_ms for floor in around)
            row.cpu_ratio = floor_cpu_ms / row.cpu_ms if row.cpu_ms else None
            measured.append(row)
        floor = sorted(floors, key=lambda run: run.requests_per_second)[len(floors) // 2]
        rates = [run.requests_per_second for run in floors]
        floor.spread, floor.floor_around = (min(rates), max(rates)), (min(rates), max(rates))
        floor.ratio, floor.cpu_ratio = 1.0, 1.0
        floor.requests = sum(run.requests for run in floors)
        floor.errors = sum(run.errors for run in floors)
        rows += [floor, *measured]
    return rows


# --- verdicts and tables -------------------------------------------------------------------------


def verdict(row: Row, engine: str) -> str:
    target = TARGETS.get((row.kind, engine))
    if target is None or row.ratio is None:
        return ""
    problems = []
    if row.ratio < target:
        problems.append(f"ratio < {target}")
    if row.errors:
        problems.append("errors")
    if row.kind == "token" and row.p99_ms > TOKEN_P99_OVER_P50 * row.p50_ms:
        problems.append(f"p99 > {TOKEN_P99_OVER_P50}x p50")
    return f"≥ {target}: " + ("met" if not problems else "MISSED (" + ", ".join(problems) + ")")


def rows_table(rows: list[Row], engine: str, repeat: int) -> str:
    header = [
        "request",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "× floor",
        "floor around",
        "target",
        "CPU ms/req",
        "CPU × floor",
    ]
    if repeat > 1:
        header.insert(3, f"req/s min–max of {repeat}")
    lines = [header]
    for row in rows:
        cells = [
            row.label,
            str(row.connections),
            f"{row.requests_per_second:,.0f}",
            f"{row.p50_ms:.1f}",
            f"{row.p99_ms:.1f}",
            str(row.errors),
            f"{row.ratio:.2f}" if row.ratio is not None else "",
            "–".join(f"{rate:,.0f}" for rate in row.floor_around) if row.floor_around[0] else "",
            verdict(row, engine),
            f"{row.cpu_ms:.2f}" if row.cpu_ms else "",
            f"{row.cpu_ratio:.2f}" if row.cpu_ratio else "",
        ]
        if repeat > 1:
            cells.insert(3, f"{row.spread[0]:,.0f}–{row.spread[1]:,.0f}")
        lines.append(cells)
    return markdown_table(lines)


def markdown_table(lines: list[list[str]]) -> str:
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]

    def render(cells):
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([render(lines[0]), separator, *(render(line) for line in lines[1:])])


def queries_table(counts: dict[str, int], kinds: list[RequestKind]) -> str:
    lines = [["request", "SQL queries per request"]]
    lines += [[kind.label, str(counts[kind.name])] for kind in kinds if kind.name in counts]
    return markdown_table(lines)


def scale_table(before: list[Row], after: list[Row]) -> str:
    lines = [
        [
            "request",
            "conns",
            "req/s empty",
            "req/s with tokens",
            "change",
            "p99 ms empty",
            "p99 ms with tokens",
            "CPU ms/req empty",
            "CPU ms/req with tokens",
        ]
    ]
    for empty, loaded in zip(before, after, strict=True):
        change = (loaded.requests_per_second / empty.requests_per_second - 1) * 100
        lines.append(
            [
                empty.label,
                str(empty.connections),
                f"{empty.requests_per_second:,.0f}",
                f"{loaded.requests_per_second:,.0f}",
                f"{change:+.1f}%",
                f"{empty.p99_ms:.1f}",
                f"{loaded.p99_ms:.1f}",
                f"{empty.cpu_ms:.2f}" if empty.cpu_ms else "",
                f"{loaded.cpu_ms:.2f}" if loaded.cpu_ms else "",
            ]
        )
    return markdown_table(lines)


# --- scale and cleanup ---------------------------------------------------------------------------


def count_queries(environment: dict, credentials: dict, name: str) -> dict[str, int]:
    credentials_path = BENCH_DIR / f"{name}-credentials.json"
    credentials_path.write_text(json.dumps(credentials))
    completed = subprocess.run(
        [sys.executable, "-m", "bench.queries", str(credentials_path)],
        cwd=PROJECT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"Counting queries failed:\n{completed.stdout}{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_cleanup(base_url, token_kind, environment, options, progress) -> dict:
    """Issue tokens at 16 connections while the cleanup command deletes the expired rows."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("--cleanup measures issuance with wrk; install wrk (Debian: apt-get install wrk)")
    load_environment = {
        **os.environ,
        "BENCH_METHOD": token_kind.method,
        "BENCH_BODY": token_kind.body,
        "BENCH_AUTHORIZATION": token_kind.authorization,
    }
    command = [
        wrk, "-t", str(options.threads), "-c", "16", "-d", "600s", "--timeout", "10s",
        "-s", str(WRK_SCRIPT), base_url + token_kind.path,
    ]  # fmt: skip
    load = subprocess.Popen(
        command, env=load_environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(2)
        progress(f"  cleanup: manage.py {' '.join(options.cleanup_command)} while issuing tokens ...")
        started = time.monotonic()
        cleanup = subprocess.run(
            [sys.executable, "manage.py", *options.cleanup_command],
            cwd=PROJECT_DIR,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=None if options.verbose else subprocess.DEVNULL,
            text=True,
            check=False,
        )
        cleanup_seconds = time.monotonic() - started
        time.sleep(2)
    finally:
        load.send_signal(signal.SIGINT)  # wrk stops and prints its summary
        stdout, stderr = load.communicate(timeout=30)
    if cleanup.returncode != 0:
        raise SystemExit(f"The cleanup command failed:\n{cleanup.stdout}")
    summary = parse_wrk_output(stdout, stderr)
    seconds = summary["duration_us"] / 1e6
    return {
        "command": "manage.py " + " ".join(options.cleanup_command),
        "cleanup_seconds": round(cleanup_seconds, 1),
        "cleanup_output": cleanup.stdout.strip().splitlines()[-1:] or [""],
        "issuance_seconds": round(seconds, 1),
        "issuance_requests_per_second": round(summary["requests"] / seconds, 1),
        "issuance_p50_ms": summary["p50_us"] / 1000,
        "issuance_p99_ms": summary["p99_us"] / 1000,
        "issuance_max_ms": summary["max_us"] / 1000,
        "issuance_errors": summary_errors(summary),
    }


# --- main ----------------------------------------------------------------------------------------


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("BENCH_SECONDS") or 10),
        help="per row (BENCH_SECONDS; default 10)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of load before each row (default: 3, or the row length when shorter)",
    )
    parser.add_argument("--connections", default="16,64", help="comma-separated (default 16,64)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="gunicorn sync workers (default: cores)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="wrk threads (default 1: leaves the cores to the server)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per row; the median is reported with the spread"
    )
    parser.add_argument("--rows", default="floor,token,introspect,products", help="which request kinds")
    parser.add_argument(
        "--scale-tokens",
        type=int,
        default=0,
        metavar="N",
        help="then load N expired tokens (bench_load_tokens) and measure again",
    )
    parser.add_argument(
        "--cleanup", action="store_true", help="then delete the loaded tokens while measuring issuance"
    )
    parser.add_argument(
        "--cleanup-command",
        default="clear_expired_tokens",
        help="manage.py command (and arguments) that deletes expired tokens",
    )
    parser.add_argument(
        "--generator", choices=["auto", "wrk", "python"], default="auto", help="auto: wrk when installed"
    )
    parser.add_argument(
        "--name", default="bench", help="names the database and files under var/bench/ (default: bench)"
    )
    parser.add_argument(
        "--drop",
        action="store_true",
        help="drop the benchmark database afterwards (default: kept for bench.profile)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--verbose", action="store_true")
    options = parser.parse_args(argv)
    options.connections = [int(value) for value in options.connections.split(",") if value]
    options.rows = [value for value in options.rows.split(",") if value]
    options.cleanup_command = options.cleanup_command.split()
    if options.warmup is None:
        options.warmup = min(3.0, options.seconds)
    if "floor" not in options.rows:
        options.rows.insert(0, "floor")
    if options.generator == "wrk" and not shutil.which("wrk"):
        parser.error("--generator wrk: wrk is not installed (Debian: apt-get install wrk)")
    if options.cleanup and not options.scale_tokens:
        parser.error("--cleanup deletes the tokens --scale-tokens loads; give both")
    return options


def main(argv=None) -> int:
    options = parse_arguments(argv)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    generator = generator_name(options.generator)
    database_url, engine = bench_database(os.environ.get("DATABASE_URL", ""), options.name)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    environment = server_environment(database_url, port, options.workers)
    progress(f"Benchmark on {engine}: provisioning {urlsplit(database_url)._replace(netloc='').geturl()} ...")
    credentials = provision(environment)

    results = {"machine": machine, "engine": engine, "generator": generator, "workers": options.workers,
               "seconds": options.seconds, "warmup": options.warmup, "repeat": options.repeat}  # fmt: skip
    with gunicorn(environment, base_url, options.name) as server:
        server_cpu = ServerCPU(server)
        credentials["access_token"] = fetch_access_token(base_url, credentials["token_client"])
        kinds = [kind for kind in request_kinds(credentials) if kind.name in options.rows]
        products = next((kind for kind in kinds if kind.name == "products"), None)
        credentials["products_available"] = products is not None and http(base_url, products)[0] == 200
        if products is not None and not credentials["products_available"]:
            progress("  GET /api/v1/products is not served by this tree (yet): that row is left out")
            kinds.remove(products)
        for kind in kinds:
            status, body = http(base_url, kind)
            if status != 200:
                raise SystemExit(f"{kind.label} answered {status}: {body[:300]!r}")
        results["queries"] = count_queries(environment, credentials, options.name)
        progress(f"Load: {generator}, {options.seconds:g} s per row after {options.warmup:g} s of warm-up")
        rows = measure_rows(base_url, kinds, options, server_cpu, progress)
        results["rows"] = [asdict(row) for row in rows]

        if options.scale_tokens:
            progress(f"  loading {options.scale_tokens:,} expired access tokens (bench_load_tokens) ...")
            started = time.monotonic()
            manage(environment, "bench_load_tokens", "--count", str(options.scale_tokens), "--expired")
            results["load_seconds"] = round(time.monotonic() - started, 1)
            scale_kinds = [kind for kind in kinds]
            scale_options = argparse.Namespace(**{**vars(options), "connections": [16]})
            empty = [row for row in rows if row.connections == 16]
            loaded = measure_rows(base_url, scale_kinds, scale_options, server_cpu, progress)
            results["scale"] = {"tokens": options.scale_tokens, "rows": [asdict(row) for row in loaded]}
            if options.cleanup:
                token_kind = next(kind for kind in kinds if kind.name == "token")
                results["cleanup"] = measure_cleanup(base_url, token_kind, environment, options, progress)
    results["load_average_after"] = load_average()
    if options.drop:
        drop_database(database_url, admin_url=os.environ.get("DATABASE_URL"))
        (BENCH_DIR / f"{options.name}-credentials.json").unlink(missing_ok=True)
        (BENCH_DIR / f"{options.name}-server.log").unlink(missing_ok=True)

    print()
    print(f"# Benchmark, {engine}, {machine['date']}")
    print(
        f"machine: {machine['nproc']} cores ({machine['cpu']}), {machine['memory_gib']} GiB; "
        f"gunicorn: {options.workers} sync workers; load generator: {generator}"
    )
    print(f"load average before: {machine['load_average']}, after: {results['load_average_after']}")
    print()
    print(rows_table(rows, engine, options.repeat))
    print()
    print(queries_table(results["queries"], kinds))
    if options.scale_tokens:
        print()
        loaded_in = results["load_seconds"]
        print(f"With {options.scale_tokens:,} more access tokens stored (loaded in {loaded_in} s):")
        print(scale_table(empty, loaded))
    if options.cleanup:
        cleanup = results["cleanup"]
        print()
        print(
            f"Cleanup ({cleanup['command']}): {cleanup['cleanup_seconds']} s. "
            f"Token issuance meanwhile ({cleanup['issuance_seconds']} s, 16 connections): "
            f"{cleanup['issuance_requests_per_second']:,.0f} req/s, p50 {cleanup['issuance_p50_ms']:.1f} ms, "
            f"p99 {cleanup['issuance_p99_ms']:.1f} ms, max {cleanup['issuance_max_ms']:.1f} ms, "
            f"errors {cleanup['issuance_errors']}"
        )
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
