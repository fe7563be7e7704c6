"""The exporter's exceptions, in one tree.

Callers catch at the level of detail they need; the ``reason`` of each class is the bounded
label value used in metrics, so an error can be counted without inventing new label values::

    ExporterError
    ├── ConfigError             the config file is unusable: exit status 2, one line naming the key
    ├── StateError              the state file cannot be opened, locked or written
    │   └── StateLockedError    another process holds the state file
    ├── TokenError              no access token could be obtained (reason: invalid_client, ...)
    ├── SourceError             a source could not deliver a page: the query is retried later
    │   ├── GraphError          a Graph request failed for good after its retries
    │   │   ├── GraphHTTPError  a non-retryable HTTP status (reason: http_error)
    │   │   │   ├── GraphAccessDenied  403: the app lacks a permission (reason: forbidden)
    │   │   │   │                      or the tenant a licence (reason: unlicensed)
    │   │   │   └── GraphBadRequest    400: Graph refused the query (reason: bad_request)
    │   │   ├── MalformedPageError  a 200 whose body is not a Graph page (reason: malformed_page)
    │   │   ├── ForeignNextLinkError a nextLink to another host, refused unsent (reason: foreign_next_link)
    │   │   └── GraphNetworkError   connection refused, reset, timed out (reason: network)
    │   └── ManagementError     a Management Activity request failed (reason: http_error)
    │       ├── ManagementNetworkError  the host could not be reached (reason: network)
    │       ├── ManagementMalformed     a listing or blob that is not the API's (reason: malformed_page)
    │       ├── ForeignUriError         a NextPageUri or contentUri off management_url (reason: foreign_next_link)
    │       ├── ManagementRefused       a status no retry fixes (reason: forbidden, bad_request, http_error)
    │       └── SubscriptionDisabled    AF20023, an administrator disabled it (reason: subscription_disabled)
    └── SinkError               a sink did not take a batch: never fatal, Delivery retries
        └── SinkUnavailable     refused, unreachable, closed mid-batch (``reason`` says how)

Beside the tree, not an error: ``Interrupted``, raised by whatever was waiting (for the
budget, a retry, a sink) when shutdown was requested, so the source loop stops where it is.
Shutdown is observed in one place, ``Clock.sleep`` returning True; everything above the
clock turns that into ``Interrupted``.

No message in this tree ever carries a secret or a bearer token.
"""

from __future__ import annotations


class Interrupted(Exception):
    """Shutdown was requested while a stage waited; the query stops where it is."""


class ExporterError(Exception):
    """Base of every error the exporter raises on purpose."""


class ConfigError(ExporterError):
    """The config names a key that is wrong; ``key`` is its path, e.g. ``sources[0].lookback``."""

    def __init__(self, key: str, why: str) -> None:
        super().__init__(f"{key}: {why}")
        self.key = key
        self.why = why


class StateError(ExporterError):
    """The ledger's SQLite file cannot be used; delivery must stop rather than re-send."""


class StateLockedError(StateError):
    """Two collectors on one state file would each deliver the other's events twice."""


class TokenError(ExporterError):
    """A token request failed. ``reason`` is one of :data:`TOKEN_FAILURE_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"token request failed ({reason}): {detail}")
        self.reason = reason
        self.detail = detail


TOKEN_FAILURE_REASONS = (
    "invalid_client",
    "unauthorized_client",
    "invalid_scope",
    "network",
    "other",
)


class SourceError(ExporterError):
    """A source could not deliver a page; the loop abandons the query and retries it later.

    Each source adapter raises its own subclass, so the loop handles every kind the same way
    without naming any. ``retry_after`` (seconds), when set, is how long the source waits
    before it asks again; None leaves it to the schedule's usual retry delay.
    """

    reason = "other"
    retry_after: float | None = None


class GraphError(SourceError):
    """A Graph request that could not be completed; the poll is abandoned and retried later."""

    reason = "http_error"


class GraphHTTPError(GraphError):
    """Graph answered with a status that retrying will not fix (400, 403, 404, ...)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code


class GraphAccessDenied(GraphHTTPError):
    """A 403: the app registration lacks a permission, or the tenant the licence a log needs.

    Retrying soon will not help, but an administrator may fix it at any time, so the source
    retries slowly (``retry_after``) and its query window is kept for when it works again.
    """

    retry_after = 300.0

    def __init__(self, status: int, code: str, message: str, *, unlicensed: bool) -> None:
        super().__init__(status, code, message)
        self.reason = "unlicensed" if unlicensed else "forbidden"


class GraphBadRequest(GraphHTTPError):
    """A 400: Graph refused the query (an unsupported filter, an endpoint's operators)."""

    reason = "bad_request"


class MalformedPageError(GraphError):
    """A 200 response that is not a complete Graph page (cut off mid-stream, not JSON, ...)."""

    reason = "malformed_page"


class ForeignNextLinkError(GraphError):
    """An ``@odata.nextLink`` pointing away from ``graph_url``: following it would leak the token."""

    reason = "foreign_next_link"


class GraphNetworkError(GraphError):
    """The Graph host could not be reached or the connection broke."""

    reason = "network"


API_ERROR_REASONS = (
    "malformed_page",
    "foreign_next_link",
    "http_error",
    "network",
    "forbidden",
    "unlicensed",
    "bad_request",
)


class ManagementError(SourceError):
    """A Management Activity request that could not be completed; the query is retried later."""

    reason = "http_error"


class ManagementNetworkError(ManagementError):
    """The management host could not be reached, or the connection broke."""

    reason = "network"


class ManagementMalformed(ManagementError):
    """A 200 whose body is not what the API sends (a listing or a blob cut off, not JSON)."""

    reason = "malformed_page"


class ForeignUriError(ManagementError):
    """A NextPageUri or contentUri off ``management_url``: following it would leak the token."""

    reason = "foreign_next_link"


class ManagementRefused(ManagementError):
    """A status retrying will not fix (a missing permission, a refused window, ...)."""

    def __init__(self, status: int, code: str, message: str, reason: str = "http_error") -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.reason = status, code, reason
        if reason == "forbidden":
            self.retry_after = 300.0  # an administrator may grant it while we wait


class SubscriptionDisabled(ManagementError):
    """AF20023: an administrator disabled the subscription; its content is not being kept."""

    reason = "subscription_disabled"
    retry_after = 60.0


class SinkError(ExporterError):
    """A sink did not take what it was given; nothing of it may be counted as delivered."""


class SinkUnavailable(SinkError):
    """The sink refused, could not be reached, or closed the connection mid-batch."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
