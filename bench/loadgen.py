"""A small HTTP/1.1 load generator in Python (asyncio, standard library only), used when wrk is absent.

It keeps `connections` requests in flight, reconnecting when the server closes the connection
(gunicorn's sync workers close after every response, as they do for wrk), and reports what
wrk's summary reports. It costs more CPU per request than wrk, so on a small machine it lowers
every row, the floor included; bench/run.py names the generator in its output.
"""

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    requests: int = 0
    status_errors: int = 0
    connect_errors: int = 0
    read_errors: int = 0
    timeouts: int = 0
    latencies_us: list[int] = field(default_factory=list)
    duration_us: int = 0

    def percentile(self, fraction: float) -> int:
        if not self.latencies_us:
            return 0
        ordered = sorted(self.latencies_us)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def summary(self) -> dict:
        return {
            "requests": self.requests,
            "duration_us": self.duration_us,
            "connect_errors": self.connect_errors,
            "read_errors": self.read_errors,
            "write_errors": 0,
            "status_errors": self.status_errors,
            "timeouts": self.timeouts,
            "p50_us": self.percentile(0.50),
            "p99_us": self.percentile(0.99),
            "max_us": max(self.latencies_us, default=0),
        }


def build_request(host: str, port: int, method: str, path: str, body: str, authorization: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    if body:
        lines += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the server keeps the connection open)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {
        name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])
    }
    length = int(headers.get("content-length", "0") or 0)
    if length:
        await reader.readexactly(length)
    return status, headers.get("connection", "").lower() != "close"


async def _connection_loop(host, port, request, deadline, result: LoadResult, timeout: float) -> None:
    reader = writer = None
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            writer.write(request)
            status, keep_alive = await asyncio.wait_for(_read_response(reader), timeout)
        except TimeoutError:
            result.timeouts += 1
            writer = _close(writer)
            continue
        except OSError:
            result.connect_errors += 1
            writer = _close(writer)
            await asyncio.sleep(0.01)
            continue
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
            result.read_errors += 1
            writer = _close(writer)
            continue
        result.requests += 1
        result.latencies_us.append(int((time.perf_counter() - started) * 1_000_000))
        if status >= 400:
            result.status_errors += 1
        if not keep_alive:
            writer = _close(writer)
    _close(writer)


def _close(writer):
    if writer is not None:
        writer.close()
    return None


async def _run(host, port, request, connections, seconds, timeout) -> LoadResult:
    result = LoadResult()
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(
        *(_connection_loop(host, port, request, deadline, result, timeout) for _ in range(connections))
    )
    result.duration_us = int((time.monotonic() - started) * 1_000_000)
    return result


def run_load(
    *,
    host: str,
    port: int,
    method: str,
    path: str,
    body: str,
    authorization: str,
    connections: int,
    seconds: float,
    timeout: float = 2.0,
) -> dict:
    request = build_request(host, port, method, path, body, authorization)
    return asyncio.run(_run(host, port, request, connections, seconds, timeout)).summary()
