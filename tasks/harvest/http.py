"""The one HTTP client every harvester uses: polite, retrying, rate-limited, concurrent.

- one `requests.Session` with a connection pool sized for the concurrency;
- connect and read timeouts on every request;
- an identifying User-Agent (`imtext/<version> (+project url)`);
- a token bucket per host (requests per second), shared by every thread, also applied to retries;
- retries with exponential backoff and jitter on 429, 5xx, timeouts and connection errors, waiting
  at least what `Retry-After` asks (and pausing the whole host meanwhile, not just one thread);
- `map(fn, items, concurrency)` runs `fn` over items on a bounded thread pool;
- secrets (API keys) are redacted from every error message and from urllib3's debug log, and the
  query string never appears in an error; `scrub` takes them out of what a service answered (an
  API that echoes the key must not get it stored).
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

log = logging.getLogger(__name__)

PROJECT_URL = "https://github.com/imtext/imtext"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
T = TypeVar("T")
R = TypeVar("R")


def version() -> str:
    try:
        from importlib.metadata import version as _version

        return _version("imtext")
    except Exception:
        return "0.0.0"


def user_agent() -> str:
    """`imtext/<version> (+<project url>)`, as Wikimedia's and Flickr's API etiquette asks."""
    return f"imtext/{version()} (+{PROJECT_URL})"


class HttpError(RuntimeError):
    """A request that failed for good (after retries). The message holds no query string or secret."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class TokenBucket:
    """Requests-per-second limit shared by threads: each caller reserves the next free slot, then sleeps.

    `burst` slots may be used back to back after an idle spell; with the default of 1, requests
    start at least 1/rate apart, so the achieved rate never exceeds the limit. The spacing aims
    `MARGIN` (1%) under the limit, so that network jitter (a first request delayed by its TCP
    handshake, say) never makes the arrivals at the server look faster than the limit.
    """

    MARGIN = 0.01

    def __init__(self, rate: float | None, burst: float = 1.0, clock=time.monotonic, sleep=time.sleep):
        self.rate = rate if rate and rate > 0 else math.inf
        self.burst = max(burst, 1.0)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = -math.inf  # theoretical arrival time of the next request
        self._paused_until = -math.inf

    @property
    def interval(self) -> float:
        return 0.0 if math.isinf(self.rate) else 1.0 / (self.rate * (1.0 - self.MARGIN))

    def acquire(self) -> float:
        """Wait for a slot; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            tolerance = (self.burst - 1) * self.interval
            slot = max(now, self._paused_until, self._next - tolerance)
            self._next = max(self._next, slot) + self.interval
        wait_s = slot - now
        if wait_s > 0:
            self._sleep(wait_s)
        return max(wait_s, 0.0)

    def pause(self, seconds: float) -> None:
        """No request to this host before `seconds` from now (a 429 with Retry-After)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(when.timestamp() - now, 0.0)


def strip_query(url: str) -> str:
    """The URL without query string or fragment: what may appear in messages."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class _RedactFilter(logging.Filter):
    """Removes secrets from log records of the libraries under requests (urllib3 logs full URLs)."""

    def __init__(self, client: HttpClient):
        super().__init__()
        self.client = client

    def filter(self, record: logging.LogRecord) -> bool:
        if self.client._secrets:
            try:
                message = record.getMessage()
            except Exception:
                return True
            record.msg = self.client.redact(message)
            record.args = ()
        return True


@dataclass
class Attempt:
    status: int | None
    error: str | None
    delay: float


class HttpClient:
    """One pooled, polite HTTP client; share it between threads."""

    def __init__(
        self,
        *,
        timeout: float | tuple[float, float] = (5.0, 30.0),
        retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 60.0,
        max_retry_after_s: float = 600.0,
        rate_limits: Mapping[str, float | None] | None = None,
        default_rate: float | None = None,
        pool_size: int = 16,
        secrets: Iterable[str | None] = (),
        agent: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.default_rate = default_rate
        self._sleep = sleep
        self._buckets: dict[str, TokenBucket] = {}
        self._bucket_lock = threading.Lock()
        self._secrets: list[str] = []
        self._secret_re: re.Pattern | None = None
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "failures": 0}
        self._stats_lock = threading.Lock()
        for host, rate in (rate_limits or {}).items():
            self.set_rate(host, rate)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = agent or user_agent()
        self.session.headers["Accept"] = "application/json"
        self._pool_size = max(pool_size, 1)
        self._mount(self._pool_size)
        self._filter = _RedactFilter(self)
        for name in ("urllib3", "urllib3.connectionpool", "requests"):
            logging.getLogger(name).addFilter(self._filter)
        for secret in secrets:
            self.add_secret(secret)

    def _mount(self, size: int) -> None:
        adapter = HTTPAdapter(pool_connections=16, pool_maxsize=size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    # -- configuration -------------------------------------------------------------------------
    def add_secret(self, secret: str | None) -> None:
        """Never show this value: it is replaced by *** in errors and logs."""
        if not secret:
            return
        self._secrets.append(secret)
        # Case-insensitive: a service may echo a hex key in upper case.
        self._secret_re = re.compile(
            "|".join(re.escape(s) for s in sorted(self._secrets, key=len, reverse=True)), re.IGNORECASE
        )

    def scrub(self, text: str) -> str:
        """`text` with every secret replaced by ***, and nothing else changed (for answers' texts)."""
        if self._secret_re is None or not text:
            return text
        return self._secret_re.sub("***", text)

    def redact(self, text: str) -> str:
        """`scrub`, and any `key=value`-like credential replaced too (for URLs, errors and logs)."""
        text = re.sub(r"(?i)(api_key|apikey|key|token|secret|password)=[^&\s'\"]+", r"\1=***", text)
        return self.scrub(text)

    def set_rate(self, host: str, rate: float | None, burst: float = 1.0) -> None:
        """Limit `host` (as in the URL, with port if any) to `rate` requests per second (None: unlimited)."""
        with self._bucket_lock:
            self._buckets[host] = TokenBucket(rate, burst, sleep=self._sleep)

    def bucket(self, url: str) -> TokenBucket:
        host = urlsplit(url).netloc
        with self._bucket_lock:
            bucket = self._buckets.get(host)
            if bucket is None:
                bucket = self._buckets[host] = TokenBucket(self.default_rate, sleep=self._sleep)
            return bucket

    def ensure_pool(self, size: int) -> None:
        """Grow the connection pool to at least `size` connections per host."""
        if size > self._pool_size:
            self._pool_size = size
            self._mount(size)

    # -- requests ------------------------------------------------------------------------------
    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Exponential backoff with jitter (half fixed, half random); at least `retry_after`."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, retry_after + random.uniform(0, min(1.0, 0.1 * retry_after + 0.05)))
        return delay

    def get(self, url: str, params: Mapping[str, Any] | None = None, **kwargs) -> requests.Response:
        """GET with rate limit and retries. Returns the final response unless it is a retryable
        status or a connection failure after every retry, which raises HttpError."""
        shown = strip_query(url)
        bucket = self.bucket(url)
        last: Attempt | None = None
        for attempt in range(self.retries + 1):
            bucket.acquire()
            self._count("requests")
            try:
                response = self.session.get(url, params=params, timeout=self.timeout, **kwargs)
            except requests.Timeout:
                last = Attempt(None, "timed out", self.backoff(attempt))
            except requests.RequestException as exc:
                last = Attempt(None, f"connection error ({type(exc).__name__})", self.backoff(attempt))
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if retry_after is not None and retry_after > self.max_retry_after_s:
                    response.close()
                    self._count("failures")
                    raise HttpError(
                        f"GET {self.redact(shown)}: HTTP {response.status_code}, Retry-After {retry_after:.0f}s "
                        f"is longer than the {self.max_retry_after_s:.0f}s allowed",
                        status=response.status_code,
                    )
                delay = self.backoff(attempt, retry_after)
                if retry_after is not None:
                    bucket.pause(retry_after)
                last = Attempt(response.status_code, f"HTTP {response.status_code} {response.reason}", delay)
                response.close()
            if attempt < self.retries:
                self._count("retries")
                log.debug(
                    "GET %s: %s, retry %d in %.2fs",
                    self.redact(shown),
                    self.redact(last.error or ""),
                    attempt + 1,
                    last.delay,
                )
                self._sleep(last.delay)
        self._count("failures")
        assert last is not None
        raise HttpError(
            f"GET {self.redact(shown)} failed after {self.retries + 1} attempts: {self.redact(last.error or '')}",
            status=last.status,
        )

    def _count(self, name: str) -> None:
        with self._stats_lock:
            self.stats[name] += 1

    # -- concurrency ---------------------------------------------------------------------------
    def map(
        self, fn: Callable[[T], R], items: Iterable[T], concurrency: int = 8
    ) -> Iterator[tuple[T, R | None, BaseException | None]]:
        """`bounded_map` with the connection pool grown to the concurrency."""
        self.ensure_pool(max(int(concurrency), 1))
        return bounded_map(fn, items, concurrency, name="imtext-http")

    def close(self) -> None:
        self.session.close()
        for name in ("urllib3", "urllib3.connectionpool", "requests"):
            logging.getLogger(name).removeFilter(self._filter)

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bounded_map(
    fn: Callable[[T], R], items: Iterable[T], concurrency: int = 8, name: str = "imtext"
) -> Iterator[tuple[T, R | None, BaseException | None]]:
    """Run `fn(item)` on a pool of `concurrency` threads; yields (item, result, error) as they finish.

    At most 2 x concurrency items are in flight, so a million items never sit in memory as
    futures. Closing the iterator early cancels what has not started.
    """
    concurrency = max(int(concurrency), 1)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=name)
    iterator = iter(items)
    pending: dict[Future, T] = {}

    def submit(n: int) -> None:
        for _ in range(n):
            try:
                item = next(iterator)
            except StopIteration:
                return
            pending[pool.submit(fn, item)] = item

    try:
        submit(2 * concurrency)
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in done:
                item = pending.pop(future)
                error = future.exception()
                yield item, (None if error else future.result()), error
            submit(len(done))
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
