"""The shared HTTP client: retries, Retry-After, timeouts, rate limit, concurrency, secrets."""

from __future__ import annotations

import email.utils
import logging
import threading
import time

import pytest
from werkzeug import Response

from flows.demo.servers import CannedData, serve_apis
from tasks.harvest.http import HttpClient, HttpError, TokenBucket, bounded_map, parse_retry_after, user_agent

SECRET = "k3y-that-must-never-show-0042"


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_token_bucket_spaces_requests_and_pauses():
    clock = FakeClock()
    bucket = TokenBucket(4.0, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(5):
        bucket.acquire()
        starts.append(clock.now)
    gap = 0.25 / (1 - TokenBucket.MARGIN)  # a hair under the limit
    assert [round(b - a, 6) for a, b in zip(starts, starts[1:], strict=False)] == [round(gap, 6)] * 4
    bucket.pause(3.0)
    before = clock.now
    bucket.acquire()
    assert clock.now - before == pytest.approx(3.0)
    burst = TokenBucket(10.0, burst=3, clock=clock, sleep=clock.sleep)
    clock.now += 100
    t0 = clock.now
    for _ in range(3):
        burst.acquire()
    assert clock.now == t0  # three back to back after an idle spell
    burst.acquire()
    assert clock.now > t0


def test_unlimited_bucket_never_waits():
    bucket = TokenBucket(None)
    assert all(bucket.acquire() == 0 for _ in range(100))


def test_retry_after_parsing():
    assert parse_retry_after("7") == 7.0
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after(when) <= 31
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def fast(**kw) -> HttpClient:
    kw.setdefault("backoff_s", 0.01)
    return HttpClient(**kw)


def test_user_agent_and_plain_answers(httpserver):
    httpserver.expect_request("/ok").respond_with_json({"a": 1})
    httpserver.expect_request("/missing").respond_with_data("no", status=404)
    with fast() as http:
        assert http.get(httpserver.url_for("/ok")).json() == {"a": 1}
        assert http.get(httpserver.url_for("/missing")).status_code == 404  # not retried
    request, _ = httpserver.log[0]
    assert request.headers["User-Agent"] == user_agent()
    assert user_agent().startswith("imtext/") and "(+http" in user_agent()
    assert len(httpserver.log) == 2


def test_429_retry_after_is_honoured(httpserver):
    httpserver.expect_ordered_request("/r").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "1"}
    )
    httpserver.expect_ordered_request("/r").respond_with_data("fine")
    with fast() as http:
        started = time.monotonic()
        assert http.get(httpserver.url_for("/r")).text == "fine"
        assert time.monotonic() - started >= 1.0
        assert http.stats == {"requests": 2, "retries": 1, "failures": 0}


def test_server_errors_give_up_with_a_clean_message(httpserver):
    httpserver.expect_request("/broken").respond_with_data("oops", status=503)
    with fast(retries=2, secrets=[SECRET]) as http:
        with pytest.raises(HttpError) as info:
            http.get(httpserver.url_for("/broken"), params={"api_key": SECRET, "q": "x"})
    assert info.value.status == 503 and "after 3 attempts" in str(info.value)
    assert SECRET not in str(info.value) and "api_key" not in str(info.value)
    assert (
        info.value.__cause__ is None
        and info.value.__context__ is None
        or SECRET not in repr(info.value.__context__)
    )
    assert len(httpserver.log) == 3


def test_retry_after_too_long_fails_at_once(httpserver):
    httpserver.expect_request("/quota").respond_with_data("", status=429, headers={"Retry-After": "3600"})
    with fast(max_retry_after_s=60) as http, pytest.raises(HttpError, match="Retry-After 3600s"):
        http.get(httpserver.url_for("/quota"))
    assert len(httpserver.log) == 1


def test_timeouts_and_refused_connections_are_retried(httpserver):
    def slow(_request):
        time.sleep(0.6)
        return Response("late")

    httpserver.expect_request("/slow").respond_with_handler(slow)
    with fast(timeout=(1.0, 0.2), retries=1) as http:
        with pytest.raises(HttpError, match="timed out"):
            http.get(httpserver.url_for("/slow"))
        with pytest.raises(HttpError, match="connection error") as info:
            http.get("http://127.0.0.1:9/x", params={"api_key": SECRET})
        assert SECRET not in str(info.value)
        assert http.stats["retries"] == 2


def test_secrets_never_reach_urllib3_logs(httpserver, caplog):
    httpserver.expect_request("/x").respond_with_data("ok")
    with caplog.at_level(logging.DEBUG), fast(secrets=[SECRET]) as http:
        http.get(httpserver.url_for("/x"), params={"api_key": SECRET})
    ours = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith("werkzeug")
    )  # the server's own log
    assert "GET /x" in ours and SECRET not in ours


def test_concurrency_and_rate_limit_against_a_slow_server():
    photos = {str(i): {"id": str(i)} for i in range(40)}
    with (
        serve_apis(CannedData(flickr=photos), fault_every=0, latency_s=0.1) as apis,
        fast(pool_size=16) as http,
    ):
        url = apis.flickr_api
        started = time.monotonic()
        results = list(
            http.map(lambda i: http.get(url, params={"photo_id": i}).status_code, range(16), concurrency=16)
        )
        parallel = time.monotonic() - started
        assert sorted(r for _, r, _ in results) == [200] * 16
        assert parallel < 0.1 * 16 / 3  # 16 requests of 100 ms at once, not one after the other

        host = url.split("/")[2]
        http.set_rate(host, 20.0)
        stamps: list[float] = []
        lock = threading.Lock()

        def timed(i):
            http.get(url, params={"photo_id": i})
            with lock:
                stamps.append(time.monotonic())

        start = time.monotonic()
        list(http.map(timed, range(20), concurrency=8))
        elapsed = time.monotonic() - start
        assert elapsed >= 19 / 20  # never faster than the limit
        assert elapsed < 19 / 20 + 0.6


def test_bounded_map_keeps_errors_and_few_items_in_flight():
    started = []

    def work(i):
        started.append(i)
        if i == 3:
            raise ValueError("three")
        return i * 2

    results = bounded_map(work, range(1000), concurrency=2)
    first = next(results)
    assert len(started) <= 4 + 1  # 2 x concurrency submitted, plus at most the one being replaced
    rest = [first, *results]
    assert len(rest) == 1000
    errors = [(item, type(e).__name__) for item, _, e in rest if e is not None]
    assert errors == [(3, "ValueError")]
