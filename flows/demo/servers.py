"""Local stand-ins for the Wikipedia REST API and the Flickr REST API, for the demo and the tests.

Real HTTP servers on 127.0.0.1 (a free port), answering from canned data with the paths, JSON
shapes, content types and error codes of the real services:

- `GET {wikipedia_api}/page/summary/{title}`: the summary JSON; titles are normalised like
  MediaWiki does (underscores, first letter upper case); redirects answer 302 to the target's
  summary; a missing page answers 404 with the REST API's problem JSON.
- `GET {flickr_api}?method=flickr.photos.getInfo&api_key=K&photo_id=ID&format=json&nojsoncallback=1`:
  `{"photo": {...}, "stat": "ok"}`; an unknown photo `{"stat":"fail","code":1,...}`, a wrong key
  code 100, an unknown method code 112, all with HTTP 200 as Flickr does; `jsonFlickrApi(...)`
  without `nojsoncallback`.

Deliberate faults (on by default): the first request for one key in `fault_every` answers 429 with
`Retry-After`, another one in `fault_every` answers 500; the next request for that key succeeds.
`latency_s` delays every answer (the harvest benchmark uses 50 ms).

Canned entries may carry test controls: `_body` (served verbatim, a str sent in `_charset`, default
utf-8, so malformed or non-UTF-8 answers can be served) and `_delay_s` (a slow answer).

    with serve_apis(CannedData.from_dir(path), api_key="k") as apis:
        apis.wikipedia_api, apis.flickr_api, apis.env()   # base URLs, IMTEXT_* variables
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

WIKIPEDIA_FILE = "wikipedia_summaries.json"
FLICKR_FILE = "flickr_getinfo.json"


def normalise_title(title: str) -> str:
    """MediaWiki's title normalisation: spaces for underscores, collapsed, first letter upper case."""
    title = " ".join(unquote(title).replace("_", " ").split())
    return title[:1].upper() + title[1:]


@dataclass
class CannedData:
    """What the stand-ins answer: Wikipedia summaries by title, redirects, Flickr getInfo photos by id."""

    wikipedia: dict[str, dict] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    flickr: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.wikipedia = {normalise_title(k): v for k, v in self.wikipedia.items()}
        self.redirects = {normalise_title(k): normalise_title(v) for k, v in self.redirects.items()}

    @classmethod
    def from_dir(cls, path: str | Path) -> CannedData:
        """Read the files `flows.demo.texts` writes (missing files mean no data for that service)."""
        path = Path(path)
        wiki = {"pages": {}, "redirects": {}}
        if (path / WIKIPEDIA_FILE).exists():
            wiki = json.loads((path / WIKIPEDIA_FILE).read_text())
        flickr = json.loads((path / FLICKR_FILE).read_text()) if (path / FLICKR_FILE).exists() else {}
        return cls(wikipedia=wiki.get("pages", {}), redirects=wiki.get("redirects", {}), flickr=flickr)


@dataclass
class ApiServers:
    """Base URLs of the running stand-ins, and what they have answered so far."""

    base_url: str
    stats: Counter
    requests: list[str]
    arrivals: list[float]  # time.monotonic() at each request's arrival, in order

    @property
    def wikipedia_api(self) -> str:
        return f"{self.base_url}/wikipedia/api/rest_v1"

    @property
    def flickr_api(self) -> str:
        return f"{self.base_url}/flickr/services/rest"

    def env(self) -> dict[str, str]:
        """The IMTEXT_* variables that point the harvesters here."""
        return {"IMTEXT_WIKIPEDIA_API": self.wikipedia_api, "IMTEXT_FLICKR_API": self.flickr_api}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, data: CannedData, api_key, fault_every, retry_after, latency_s):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.data = data
        self.api_key = api_key
        self.fault_every = fault_every
        self.retry_after = retry_after
        self.latency_s = latency_s
        self.lock = threading.Lock()
        self.seen: Counter = Counter()
        self.stats: Counter = Counter()
        self.requests: list[str] = []
        self.arrivals: list[float] = []

    def fault_for(self, key: str) -> int | None:
        """429 or 500 for the first request of some keys (chosen by a stable hash), else None."""
        with self.lock:
            self.seen[key] += 1
            first = self.seen[key] == 1
        if not self.fault_every or not first:
            return None
        bucket = zlib.crc32(key.encode()) % self.fault_every
        return 429 if bucket == 0 else 500 if bucket == 1 else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one segment (flushed after each request) with Nagle off, as from a
    # real API server; otherwise delayed ACKs add 40 ms to every answer.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: _Server
    server_version = "imtext-standin/1"

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet: tests and the demo read stats
        return

    # -- plumbing ------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        with self.server.lock:
            self.server.stats[status] += 1

    def _json(self, status: int, payload, content_type: str = "application/json; charset=utf-8", **headers):
        self._send(status, json.dumps(payload).encode("utf-8"), content_type, headers or None)

    def _canned(self, entry: dict, default_status: int = 200) -> bool:
        """Serve test controls of an entry; True when the answer was sent."""
        if entry.get("_delay_s"):
            time.sleep(float(entry["_delay_s"]))
        if "_body" in entry:
            body = entry["_body"]
            if isinstance(body, str):
                body = body.encode(entry.get("_charset", "utf-8"))
            self._send(int(entry.get("_status", default_status)), body, "application/json")
            return True
        return False

    def _fault(self, key: str) -> bool:
        status = self.server.fault_for(key)
        if status == 429:
            self._json(
                429,
                {"error": "too many requests"},
                **{"Retry-After": str(self.server.retry_after)},
            )
            return True
        if status == 500:
            self._send(500, b"<html><body>Internal Server Error</body></html>", "text/html")
            return True
        return False

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        with self.server.lock:
            self.server.arrivals.append(time.monotonic())
        if self.server.latency_s:
            time.sleep(self.server.latency_s)
        parts = urlsplit(self.path)
        with self.server.lock:
            self.server.requests.append(parts.path)
        if parts.path.startswith("/wikipedia/api/rest_v1/page/summary/"):
            self._wikipedia(parts.path.rsplit("/page/summary/", 1)[1])
        elif parts.path == "/flickr/services/rest":
            self._flickr(parse_qs(parts.query))
        else:
            self._send(404, b"not found", "text/plain")

    # -- Wikipedia -----------------------------------------------------------------------------
    def _wikipedia(self, raw_title: str) -> None:
        title = normalise_title(raw_title)
        if self._fault("wikipedia:" + title):
            return
        data = self.server.data
        if title in data.redirects:
            target = quote(data.redirects[title].replace(" ", "_"), safe="")
            self._send(302, b"", "text/plain", {"Location": target})
            return
        page = data.wikipedia.get(title)
        if page is None:
            self._json(
                404,
                {
                    "type": "https://mediawiki.org/wiki/HyperSwitch/errors/not_found",
                    "title": "Not found.",
                    "method": "get",
                    "detail": "Page or revision not found.",
                    "uri": f"/en.wikipedia.org/v1/page/summary/{quote(raw_title, safe='')}",
                },
                content_type="application/problem+json",
            )
            return
        if self._canned(page):
            return
        self._json(
            200,
            page,
            content_type='application/json; charset=utf-8; profile="https://www.mediawiki.org/wiki/Specs/Summary/1.4.2"',
        )

    # -- Flickr --------------------------------------------------------------------------------
    def _flickr(self, query: dict[str, list[str]]) -> None:
        arg = {k: v[-1] for k, v in query.items()}
        photo_id = arg.get("photo_id", "")
        if self._fault("flickr:" + photo_id):
            return
        if self.server.api_key is not None and arg.get("api_key") != self.server.api_key:
            answer = {"stat": "fail", "code": 100, "message": "Invalid API Key (Key has invalid format)"}
        elif arg.get("method") != "flickr.photos.getInfo":
            answer = {"stat": "fail", "code": 112, "message": f'Method "{arg.get("method", "")}" not found'}
        else:
            photo = self.server.data.flickr.get(photo_id)
            if photo is None:
                answer = {"stat": "fail", "code": 1, "message": f'Photo "{photo_id}" not found'}
            else:
                if self._canned(photo):
                    return
                answer = {"photo": photo, "stat": "ok"}
        body = json.dumps(answer)
        if arg.get("format") == "json" and arg.get("nojsoncallback") != "1":
            body = f"jsonFlickrApi({body})"
        self._send(200, body.encode("utf-8"), "application/json; charset=utf-8")


@contextlib.contextmanager
def serve_apis(
    data: CannedData | str | Path | None = None,
    *,
    api_key: str | None = None,
    fault_every: int = 20,
    retry_after: int = 1,
    latency_s: float = 0.0,
) -> Iterator[ApiServers]:
    """Run the Wikipedia and Flickr stand-ins on 127.0.0.1 (free port) until the block ends.

    `data`: canned answers, or a directory written by `flows.demo.texts.write_harvest_inputs`.
    `api_key`: the Flickr key the stand-in accepts (None accepts any). `fault_every`: one key in
    this many gets a 429 first and one a 500 first (0: no faults).
    """
    if data is None:
        data = CannedData()
    elif not isinstance(data, CannedData):
        data = CannedData.from_dir(data)
    server = _Server(data, api_key, fault_every, retry_after, latency_s)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield ApiServers(
            base_url=f"http://{host}:{port}",
            stats=server.stats,
            requests=server.requests,
            arrivals=server.arrivals,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
