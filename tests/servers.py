"""Real server processes for the tests that talk HTTP over a socket.

`LiveServer` runs this project under gunicorn (the same config as `make run`) against the test
database, on a free loopback port, and stops it afterwards.
"""

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import requests
from django.conf import settings
from django.db import connection

from config.tls import ensure_self_signed_certificate

PROJECT_DIR = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_is_free(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))  # noqa: S104 (what `make run` binds by default)
        except OSError:
            return False
        return True


def wait_for_time_left_in_window(limit, seconds: float = 30) -> None:
    """Sleeps, if need be, until `limit`'s current fixed window (authserver/throttling.py) has
    `seconds` left: a test's attempts against a live server then all count in one window (the server's
    clock is not this process's to stop, as the one_throttle_window fixture does in-process)."""
    left = limit.seconds - time.time() % limit.seconds  # time.time(): throttling's own is stopped here
    if left < seconds:
        time.sleep(left + 0.1)


def test_database_url() -> str:
    """The URL of the database the tests are using (created by pytest-django)."""
    database = connection.settings_dict
    if database["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{database['NAME']}"
    credentials = database["USER"] + (f":{database['PASSWORD']}" if database["PASSWORD"] else "")
    host, port = database["HOST"] or "127.0.0.1", database["PORT"] or 5432
    return f"postgres://{credentials}@{host}:{port}/{database['NAME']}"


def ensure_certificate() -> Path:
    ensure_self_signed_certificate(
        settings.TLS_CERT_FILE, settings.TLS_KEY_FILE, ["localhost", "127.0.0.1", "::1"]
    )
    return settings.TLS_CERT_FILE


def server_environment(**overrides) -> dict:
    environment = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "VAR_DIR": str(settings.VAR_DIR),
        "DEBUG": "off",
        "ACCESS_LOG": "off",
        "PYTHONUNBUFFERED": "1",
    }
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    environment.update({key: str(value) for key, value in overrides.items()})
    return environment


class LiveServer:
    """gunicorn serving this project; use as a context manager.

    `tls=True` serves HTTPS with var/tls's certificate (`verify` is then its path); the issuer is
    the server's own base URL so that metadata and registration URLs point back at it.
    """

    def __init__(self, *, workers: int = 2, tls: bool = True, port: int | None = None, **environment):
        self.port = port or free_port()
        self.workers = workers
        self.tls = tls
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://localhost:{self.port}"
        self.verify = str(ensure_certificate()) if tls else True
        self.environment = server_environment(
            BIND=f"127.0.0.1:{self.port}",
            TLS="on" if tls else "off",
            WEB_CONCURRENCY=workers,
            ISSUER=self.url,
            **environment,
        )
        self.process: subprocess.Popen | None = None
        self.log_path = settings.VAR_DIR / f"test-server-{self.port}.log"

    def __enter__(self) -> "LiveServer":
        self.log = open(self.log_path, "w+b")
        self.process = subprocess.Popen(
            [str(GUNICORN), "-c", "config/gunicorn.conf.py"],
            cwd=PROJECT_DIR,
            env=self.environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_until_ready()
        return self

    def wait_until_ready(self, timeout: float = 30) -> None:
        """Until the site answers and every worker has loaded it: a worker still loading takes no
        connection, so a test's requests "from 8 threads, served by every worker" would all go to
        the first one ready (a test that had every worker remember a token found one that had not)."""
        context = ssl.create_default_context(cafile=self.verify) if self.tls else None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited early:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2, context=context) as response:
                    if response.status == 200 and self.output().count("Worker ready (pid: ") >= self.workers:
                        return
                time.sleep(0.05)
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        listing = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in listing.stdout.split()]

    def __exit__(self, *exc_info) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        self.log_path.unlink(missing_ok=True)


class RedisServer:
    """A private redis-server on a free loopback port, for tests that stop and restart it (never
    the shared one on 6379); use as a context manager."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=1).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "RedisServer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.kill()


def catalogue_answers(server: LiveServer, token: str, count: int = 32) -> list[requests.Response]:
    """`count` catalogue requests with `token` from 8 threads at once: served by every worker."""

    def fetch(_) -> requests.Response:
        return requests.get(
            f"{server.url}/api/v1/products",
            headers={"Authorization": f"Bearer {token}"},
            verify=server.verify,
            timeout=30,
        )

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(fetch, range(count)))
