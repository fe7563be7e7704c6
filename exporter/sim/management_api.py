"""The Office 365 Management Activity API of the simulated tenant, and its `/_sim/management/`
control endpoints.

Served under ``/api/v1.0/{tenant}/activity/feed/`` as Microsoft documents it:
``POST subscriptions/start|stop?contentType=``, ``GET subscriptions/list``, ``GET
subscriptions/content?contentType=&startTime=&endTime=`` (blob entries by contentCreated,
paged by a ``NextPageUri`` header) and ``GET audit/{contentId}`` (a blob: a JSON array of
records). The errors a collector must handle come back with the service's codes: AF20022
(no subscription), AF20023 (disabled by an administrator), AF20024 (already enabled: a
success in disguise), AF20051 (content expired), AF20055 (a window over 24 hours, or
starting more than 7 days back) and AF429, a throttle answered with HTTP 403 rather than
429. Every request should carry ``PublisherIdentifier`` (the tenant GUID); the ones that
do not are counted, since without it a real tenant shares a pool with everyone.

The content itself is :mod:`exporter.sim.management_feed`'s.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from exporter.sim.management_feed import (
    CONTENT_TYPES,
    Feed,
    FeedSettings,
    management_time,
)
from exporter.sim.messages import Request, Response, json_response
from exporter.sim.state import TokenStore

# Requests use /api/v1.0/; the NextPageUri Microsoft returns says /api/v1/ (its reference
# shows it so), and a collector follows it as given: both are served.
FEED_PREFIXES = ("/api/v1.0/", "/api/v1/")
MAX_WINDOW = 24 * 3600.0
MAX_AGE = 7 * 86400.0
_FAST = FeedSettings(
    rates={"Audit.AzureActiveDirectory": 4.0, "Audit.Exchange": 2.0},
    blob_period=1.0,
    lateness=((0.8, 0.2, 3.0), (0.2, 3.0, 20.0)),  # a later blob holds older records
    listing_lag=((0.85, 0.0, 1.0), (0.15, 2.0, 15.0)),  # the listing itself lags
    duplicate_share=0.1,
    duplicate_spread=5,
    page_size=8,
)
# Feeds per tenant scenario: the demo and tests squeeze hours of latency into seconds.
FEEDS: dict[str, FeedSettings] = {"test": _FAST, "demo": _FAST}


@dataclasses.dataclass
class ManagementFaults:
    """Knobs a test turns: counters are consumed one request at a time."""

    af429: int = 0  # the next N requests are throttled with 403 AF429
    # The next N downloads of a blob that holds some record's only copy find it expired
    # (AF20051): a record lost, not one a duplicate blob still has.
    expire_fetches: int = 0
    foreign_next_page: int = 0  # the next N NextPageUri headers point to another host
    foreign_url: str = "https://manage.example.invalid"


class ManagementApi:
    """The feed of every content type of one tenant, its budget, faults and counts."""

    def __init__(
        self,
        tenant_ids: tuple[str, ...],
        tenant_guid: str,
        base_url: Callable[[], str],
        clock: Callable[[], float],
        tokens: TokenStore,
        settings: FeedSettings,
        seed: int,
    ) -> None:
        self._tenant_ids = {t.lower() for t in tenant_ids}
        self._guid = tenant_guid
        self._base_url = base_url
        self._clock = clock
        self._tokens = tokens
        self._settings = settings
        self._lock = threading.RLock()
        now = clock()
        self._feeds = {
            ct: Feed.create(ct, tenant_guid, settings, seed, now) for ct in CONTENT_TYPES
        }
        self._budget = settings.budget
        self._recent: deque[float] = deque()
        self.faults = ManagementFaults()
        self._frozen_at: float | None = None
        self._counts: Counter[str] = Counter()
        self._fetches: Counter[str] = Counter()

    # -- the API ------------------------------------------------------------------------

    @staticmethod
    def handles(path: str) -> bool:
        """Whether ``path`` is this API's."""
        return path.startswith(FEED_PREFIXES)

    def serve(self, request: Request, path: str, query: dict[str, list[str]]) -> Response:
        """Answer one request under ``/api/v1.0/`` (or ``/api/v1/``)."""
        prefix = next(p for p in FEED_PREFIXES if path.startswith(p))
        parts = path[len(prefix) :].split("/")
        if len(parts) < 4 or parts[1:3] != ["activity", "feed"]:
            return _error(404, "AF20001", f"Resource not found: '{path}'.")
        if parts[0].lower() not in self._tenant_ids:
            return _error(400, "AF20010", f"The tenant ID {parts[0]!r} is not valid.")
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or self._tokens.problem(auth[7:]) is not None:
            return _error(401, "AF10001", "Authorization has been denied for this request.")
        operation = "/".join(parts[3:])
        with self._lock:
            self._counts["audit" if operation.startswith("audit/") else operation] += 1
            publisher = query.get("PublisherIdentifier", [""])[0]
            if publisher != self._guid:
                self._counts["without_publisher"] += 1
            if self._throttled():
                self._counts["throttled"] += 1
                method = "GetBlob" if operation.startswith("audit/") else "ListContent"
                pool = publisher or "00000000-0000-0000-0000-000000000000"
                message = f"Too many requests. Method={method}, PublisherId={pool}"
                return _error(403, "AF429", message)
            return self._operation(request.method, operation, query, parts[0])

    def _throttled(self) -> bool:
        if self.faults.af429 > 0:
            self.faults.af429 -= 1
            return True
        now = self._clock()
        requests, per = self._budget
        while self._recent and self._recent[0] <= now - per:
            self._recent.popleft()
        if len(self._recent) >= requests:
            return True
        self._recent.append(now)
        return False

    def _operation(
        self, method: str, operation: str, query: dict[str, list[str]], tenant: str
    ) -> Response:
        if operation.startswith("audit/") and method == "GET":
            return self._blob(operation[len("audit/") :])
        if operation == "subscriptions/list" and method == "GET":
            return json_response(200, [self._subscription(feed) for feed in self._feeds.values()])
        feed = self._feeds.get(query.get("contentType", [""])[0])
        if feed is None:
            return _error(400, "AF20004", "The content type is not supported.")
        now = self._clock()
        if operation == "subscriptions/start" and method == "POST":
            if feed.disabled_by_admin:
                return _disabled(feed)
            if feed.subscribed:
                message = "The subscription is already enabled. No property change."
                return _error(400, "AF20024", message)
            feed.start(now)
            return json_response(200, self._subscription(feed))
        if operation == "subscriptions/stop" and method == "POST":
            feed.stop(now)
            return Response(200, b"")
        if operation == "subscriptions/content" and method == "GET":
            return self._list(feed, query, tenant, now)
        return _error(404, "AF20001", f"No operation {method} {operation}.")

    def _subscription(self, feed: Feed) -> dict[str, Any]:
        status = "enabled" if feed.subscribed and not feed.disabled_by_admin else "disabled"
        return {"contentType": feed.content_type, "status": status, "webhook": None}

    def _list(self, feed: Feed, query: dict[str, list[str]], tenant: str, now: float) -> Response:
        if feed.disabled_by_admin:
            return _disabled(feed)
        if not feed.subscribed:
            return _error(400, "AF20022", "No subscription found for the specified content type")
        window = _window(query, now)
        if isinstance(window, Response):
            return window
        start, end = window
        visible = now if self._frozen_at is None else self._frozen_at
        feed.advance(visible)
        blobs = feed.listable(start, end, now, visible)
        offset = int(query.get("nextPage", ["0"])[0] or 0)
        size = self._settings.page_size
        page = blobs[offset : offset + size]
        base = self._base_url()
        entries = [
            {
                "contentType": feed.content_type,
                "contentId": blob.content_id,
                "contentUri": f"{base}/api/v1.0/{tenant}/activity/feed/audit/{blob.content_id}",
                "contentCreated": management_time(blob.created) + ".000Z",
                "contentExpiration": management_time(blob.expires) + ".000Z",
            }
            for blob in page
        ]
        headers = {}
        if offset + size < len(blobs):
            host = base
            if self.faults.foreign_next_page > 0:
                self.faults.foreign_next_page -= 1
                host = self.faults.foreign_url
            params = {
                "contentType": feed.content_type,
                "startTime": query["startTime"][0],
                "endTime": query["endTime"][0],
                "nextPage": str(offset + size),
            }
            # As Microsoft's reference shows it: /api/v1/, without PublisherIdentifier.
            headers["NextPageUri"] = (
                f"{host}/api/v1/{tenant}/activity/feed/subscriptions/content?{urlencode(params)}"
            )
        return json_response(200, entries, headers)

    def _blob(self, content_id: str) -> Response:
        feed = self._feeds.get(content_id.rpartition("$")[2])
        blob = None if feed is None else feed.by_id.get(content_id)
        now = self._clock()
        if blob is None or feed is None or not feed.kept(blob):
            return _error(404, "AF20050", f"The content {content_id} does not exist.")
        self._fetches[content_id] += 1
        if self.faults.expire_fetches > 0 and feed.holds_a_sole_copy(blob):
            self.faults.expire_fetches -= 1
            blob.expires = min(blob.expires, now)
        if blob.expires <= now:
            return _error(
                400,
                "AF20051",
                f"Content requested with the key {content_id} has already expired. "
                "Content older than 7 days cannot be retrieved.",
            )
        return json_response(200, blob.records)

    # -- control ------------------------------------------------------------------------

    def control(self, request: Request, action: str, query: dict[str, list[str]]) -> Response:
        """Answer ``/_sim/management/<action>``: truth, stats, faults, subscription, freeze."""
        try:
            with self._lock:
                if action == "truth" and request.method == "GET":
                    content_type = query.get("contentType", [CONTENT_TYPES[0]])[0]
                    return json_response(200, self.truth(content_type))
                if action == "stats" and request.method == "GET":
                    return json_response(200, self.stats())
                if action == "faults" and request.method == "POST":
                    self.set_faults(**json.loads(request.body or b"{}"))
                    return json_response(200, dataclasses.asdict(self.faults))
                if action == "subscription" and request.method == "POST":
                    body = json.loads(request.body or b"{}")
                    self.admin(str(body.get("contentType")), bool(body.get("disabled")))
                    return json_response(200, self._subscription(self._feeds[body["contentType"]]))
                if action == "freeze" and request.method == "POST":
                    return json_response(200, {"frozen_at": self.freeze()})
        except (KeyError, TypeError, ValueError) as exc:
            return json_response(400, {"error": f"bad request: {exc}"})
        return json_response(404, {"error": f"no control endpoint /_sim/management/{action}"})

    def truth(self, content_type: str) -> list[dict[str, Any]]:
        """Every record of a content type so far, with the blobs that hold it (see Feed.truth)."""
        with self._lock:
            feed = self._feeds[content_type]
            visible = self._clock() if self._frozen_at is None else self._frozen_at
            feed.advance(visible)
            return feed.truth(visible)

    def set_faults(self, **knobs: Any) -> None:
        """Change fault counters; ``budget=[requests, per_seconds]`` replaces the budget."""
        budget = knobs.pop("budget", None)
        if budget is not None:
            self._budget = (int(budget[0]), float(budget[1]))
        for name, value in knobs.items():
            if name not in ManagementFaults.__dataclass_fields__:
                raise ValueError(f"unknown knob {name}")
            if type(value) is not type(getattr(self.faults, name)):
                raise ValueError(f"{name} has the wrong type")
            setattr(self.faults, name, value)

    def admin(self, content_type: str, disabled: bool) -> None:
        """An administrator disables a subscription (AF20023), or enables it again.

        Content created while it is disabled is gone, as after a stop; re-enabling starts it.
        """
        feed = self._feeds[content_type]
        now = self._clock()
        feed.disabled_by_admin = disabled
        if disabled:
            feed.stop(now)
        else:
            feed.start(now)

    def freeze(self) -> float:
        """Nothing more is created or becomes listable from now on; returns when."""
        with self._lock:
            if self._frozen_at is None:
                self._frozen_at = self._clock()
            return self._frozen_at

    def stats(self) -> dict[str, Any]:
        """Requests per operation, throttled and without PublisherIdentifier, fetches per blob."""
        with self._lock:
            return {
                "requests": dict(self._counts),
                "blob_fetches": dict(self._fetches),
                "subscriptions": {ct: self._subscription(f) for ct, f in self._feeds.items()},
                "frozen_at": self._frozen_at,
            }


def _window(query: Mapping[str, list[str]], now: float) -> tuple[float, float] | Response:
    """The listing window, or AF20055: both bounds or neither, at most 24 h, at most 7 days back."""
    start_text, end_text = query.get("startTime", [None])[0], query.get("endTime", [None])[0]
    if start_text is None and end_text is None:
        return now - MAX_WINDOW, now
    rule = (
        "Start time and end time must both be specified (or both omitted) and must be less "
        "than or equal to 24 hours apart, with the start time no more than 7 days in the past."
    )
    try:
        start, end = _parse_time(start_text), _parse_time(end_text)
    except (TypeError, ValueError):
        return _error(400, "AF20055", rule)
    if not start < end or end - start > MAX_WINDOW or start < now - MAX_AGE:
        return _error(400, "AF20055", rule)
    return start, end


def _parse_time(text: str | None) -> float:
    if text is None:
        raise ValueError("missing")
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def _disabled(feed: Feed) -> Response:
    return _error(
        400,
        "AF20023",
        f"The subscription for {feed.content_type} was disabled by an administrator.",
    )


def _error(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": {"code": code, "message": message}})
