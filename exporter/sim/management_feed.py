"""The content of the simulated Management Activity API: records, the blobs that carry them,
and the subscriptions that decide which blobs exist.

What the real service does, and this model copies (Microsoft's reference and
troubleshooting pages): records are aggregated into content blobs per content type; a blob
is listed by its ``contentCreated`` (when it became available), not by its records' own
``CreationTime``; a later blob may hold older records; the same record may sit in several
blobs (the service retries; de-duplication is the consumer's job); a blob is listable some
time after its ``contentCreated`` (the listing lags) and expires at ``contentExpiration``;
content created while a subscription is not enabled is never available.

Everything is generated lazily from a seed as the clock advances, so the model is
deterministic and cheap: records arrive as a Poisson stream per content type, each is
late by a draw from log-uniform bands, lands in the blob of the period it became
available in, and sometimes also in a blob a few periods later, with its fields in another
order. Guarded by the caller's lock (:class:`exporter.sim.management_api.ManagementApi`).
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.sim.objects import stable_guid

CONTENT_TYPES = (
    "Audit.AzureActiveDirectory",
    "Audit.Exchange",
    "Audit.SharePoint",
    "Audit.General",
    "DLP.All",
)
RETENTION = 7 * 86400.0  # contentExpiration is seven days after contentCreated
# RecordType, Workload and Operation of the records each content type carries.
_RECORD_KINDS = {
    "Audit.AzureActiveDirectory": (15, "AzureActiveDirectory", "UserLoggedIn"),
    "Audit.Exchange": (2, "Exchange", "MailItemsAccessed"),
    "Audit.SharePoint": (6, "SharePoint", "FileAccessed"),
    "Audit.General": (25, "MicrosoftTeams", "MessageSent"),
    "DLP.All": (11, "Exchange", "DlpRuleMatch"),
}
Band = tuple[float, float, float]  # (share, low seconds, high seconds), log-uniform within


@dataclass(frozen=True)
class FeedSettings:
    """How one simulated tenant's feed behaves; times in seconds.

    ``lateness`` is when a record becomes available after its CreationTime, ``listing_lag``
    when a blob becomes listable after its contentCreated; ``duplicate_share`` of records
    is put into a second blob up to ``duplicate_spread`` periods later.
    """

    rates: Mapping[str, float]
    blob_period: float
    lateness: tuple[Band, ...]
    listing_lag: tuple[Band, ...]
    duplicate_share: float
    duplicate_spread: int
    page_size: int  # blob entries per listing page
    budget: tuple[int, float] = (2000, 60.0)


def draw(bands: tuple[Band, ...], rng: random.Random) -> float:
    """A delay from a mixture of log-uniform bands (a band with low 0 is uniform)."""
    pick = rng.random() * sum(share for share, _, _ in bands)
    chosen = bands[-1]
    for band in bands:
        if pick < band[0]:
            chosen = band
            break
        pick -= band[0]
    _, low, high = chosen
    if low <= 0:
        return rng.uniform(low, high)
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def management_time(epoch: float) -> str:
    """The API's timestamp form: UTC without a zone suffix."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class Blob:
    """One content blob; ``records`` are its own copies (a duplicate has its own field order)."""

    content_id: str
    created: float
    listable_at: float
    expires: float
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Feed:
    """One content type: its records, its blobs, and when its subscription was enabled."""

    content_type: str
    tenant_guid: str
    settings: FeedSettings
    rng: random.Random
    next_time: float
    blobs: dict[int, Blob] = field(default_factory=dict)  # by period number
    by_id: dict[str, Blob] = field(default_factory=dict)
    records: list[tuple[str, float, list[int]]] = field(default_factory=list)
    enabled: list[list[float]] = field(default_factory=list)  # [start, end or inf]
    disabled_by_admin: bool = False
    sequence: int = 0

    @classmethod
    def create(
        cls, content_type: str, tenant_guid: str, settings: FeedSettings, seed: int, now: float
    ) -> Feed:
        rng = random.Random(f"{seed}:{content_type}")
        return cls(content_type, tenant_guid, settings, rng, now)

    # -- subscriptions -------------------------------------------------------------------

    @property
    def subscribed(self) -> bool:
        return bool(self.enabled) and math.isinf(self.enabled[-1][1])

    def start(self, now: float) -> None:
        if not self.subscribed:
            self.enabled.append([now, math.inf])

    def stop(self, now: float) -> None:
        if self.subscribed:
            self.enabled[-1][1] = now

    def _enabled_at(self, when: float) -> bool:
        return any(start <= when < end for start, end in self.enabled)

    # -- content -------------------------------------------------------------------------

    def advance(self, until: float) -> None:
        """Generate every record with a CreationTime up to ``until``, into its blobs."""
        rate = self.settings.rates.get(self.content_type, 0.0)
        if rate <= 0:
            return
        while self.next_time <= until:
            self._record(self.next_time)
            self.next_time += self.rng.expovariate(rate)

    def _record(self, created: float) -> None:
        settings, rng = self.settings, self.rng
        self.sequence += 1
        record_type, workload, operation = _RECORD_KINDS[self.content_type]
        record = {
            "CreationTime": management_time(created),
            "Id": stable_guid(self.tenant_guid, self.content_type, self.sequence),
            "Operation": operation,
            "OrganizationId": self.tenant_guid,
            "RecordType": record_type,
            "ResultStatus": "Success",
            "UserKey": f"1003{self.sequence:012X}",
            "UserType": 0,
            "Version": 1,
            "Workload": workload,
            "ClientIP": f"203.0.113.{self.sequence % 250 + 1}",
            "UserId": f"user{self.sequence % 40}@contoso.onmicrosoft.com",
        }
        period = settings.blob_period
        first = math.ceil((created + draw(settings.lateness, rng)) / period)
        periods = [first]
        if rng.random() < settings.duplicate_share:
            periods.append(first + rng.randint(1, settings.duplicate_spread))
        for number in periods:
            copy = list(record.items())
            rng.shuffle(copy)  # field order is not stable: never dedupe on the JSON
            self._blob(number).records.append(dict(copy))
        self.records.append((str(record["Id"]), created, periods))

    def _blob(self, number: int) -> Blob:
        blob = self.blobs.get(number)
        if blob is None:
            created = number * self.settings.blob_period
            lag = draw(self.settings.listing_lag, self.rng)
            guid = stable_guid(self.tenant_guid, self.content_type, "blob", number)
            content_id = f"{guid.replace('-', '')}${self.content_type}"
            blob = Blob(content_id, created, created + lag, created + RETENTION)
            self.blobs[number] = blob
            self.by_id[content_id] = blob
        return blob

    def holds_a_sole_copy(self, blob: Blob) -> bool:
        """Whether a record of ``blob`` is in no other blob: expiring it loses that record."""
        number = round(blob.created / self.settings.blob_period)
        return any(periods == [number] for _, _, periods in self.records)

    def kept(self, blob: Blob) -> bool:
        """Whether the blob exists at all: its subscription was enabled when it was created."""
        return self._enabled_at(blob.created)

    def listable(self, start: float, end: float, now: float, visible_until: float) -> list[Blob]:
        """Blobs with ``start <= contentCreated < end`` listable now, oldest first."""
        found = [
            blob
            for blob in self.blobs.values()
            if start <= blob.created < end
            and blob.created <= visible_until
            and blob.listable_at <= min(now, visible_until)
            and blob.expires > now
            and self.kept(blob)
        ]
        return sorted(found, key=lambda blob: blob.created)

    def truth(self, visible_until: float) -> list[dict[str, Any]]:
        """Every record with the blobs holding it: what a perfect consumer could have had."""
        out = []
        for record_id, created, periods in self.records:
            blobs = [self.blobs[number] for number in periods]
            out.append(
                {
                    "Id": record_id,
                    "creation_time": created,
                    "blobs": [
                        {
                            "content_id": blob.content_id,
                            "content_created": blob.created,
                            "listable_at": blob.listable_at,
                            "expires": blob.expires,
                            "exists": self.kept(blob) and blob.created <= visible_until,
                        }
                        for blob in blobs
                    ],
                }
            )
        return out
