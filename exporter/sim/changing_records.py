"""Graph objects of records that change after creation: Identity Protection's
`riskDetection` and Microsoft 365 Defender's `security.alert` (alerts_v2).

Each version is a pure function of (seed, :class:`~exporter.sim.records.Version`): the
record's fixed part comes from an rng seeded per record, its state from the version number
along a path drawn once per record, so every version of a record shares its id, creation
time and evidence while its state and update time move on, as Graph's do.
"""

from __future__ import annotations

import hashlib
import json
import random

from exporter.sim.objects import (
    JsonObject,
    ip_address,
    iso_from_ticks,
    stable_guid,
    tenant_guid,
)
from exporter.sim.records import Version

_RISK_EVENTS = (
    ("unfamiliarFeatures", "realtime", "signin"),
    ("anonymizedIPAddress", "realtime", "signin"),
    ("leakedCredentials", "offline", "user"),
    ("impossibleTravel", "offline", "signin"),
    ("passwordSpray", "offline", "signin"),
)
# Where a risk goes after "atRisk"; each change of a record draws the next from here.
_RISK_CHANGES = (
    ("confirmedCompromised", "adminConfirmedUserCompromised"),
    ("remediated", "userPerformedSecuredPasswordChange"),
    ("dismissed", "adminDismissedAllRiskForUser"),
    ("remediated", "userPassedMFADrivenByRiskBasedPolicy"),
    ("atRisk", "none"),
)
_PEOPLE = (
    ("Adele Vance", "AdeleV"),
    ("Zoë Ångström", "zoe.angstrom"),
    ("李雷", "li.lei"),
    ("O'Brien, Siobhán", "siobhan.obrien"),
)
_PLACES = (
    ("Lagos", "Lagos", "NG", 6.45, 3.39),
    ("Zürich", "Zürich", "CH", 47.37, 8.54),
    ("São Paulo", "São Paulo", "BR", -23.55, -46.63),
)
_ALERTS = (
    (
        "Suspicious execution of hidden file",
        "DefenseEvasion",
        "microsoftDefenderForEndpoint",
        "antivirus",
        ["T1564.001"],
    ),
    (
        "Atypical travel",
        "InitialAccess",
        "azureAdIdentityProtection",
        "azureAdIdentityProtection",
        ["T1078"],
    ),
    (
        'Email messages containing malicious URL removed after delivery "ZAP"',
        "InitialAccess",
        "microsoftDefenderForOffice365",
        "microsoftDefenderForOffice365",
        ["T1566.002"],
    ),
)
_ANALYSTS = ("soc-tier1@contoso.onmicrosoft.com", "Automation", "ångström.admin@contoso.com")
_VERDICTS = (
    ("truePositive", "malware"),
    ("falsePositive", "notMalicious"),
    ("informationalExpectedActivity", "securityTesting"),
)


def risk_detection_id(seed: int, record: int) -> str:
    """The id of risk detection `record`: 64 lower-case hex digits, as Graph's are."""
    return hashlib.sha256(f"{seed}:riskDetections:{record}".encode()).hexdigest()


def alert_id(seed: int, record: int) -> str:
    """The id of alert `record`, in Defender's `da<18 digits>_<signed int>` shape."""
    digest = hashlib.sha256(f"{seed}:alerts:{record}".encode()).digest()
    number = int.from_bytes(digest[:4], "big", signed=True)
    return f"da{638_000_000_000_000_000 + record:018d}_{number}"


def _path(rng: random.Random, choices: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """A record's states, one per change; more than any scenario draws."""
    return [rng.choice(choices) for _ in range(8)]


def risk_detection(seed: int, version: Version) -> JsonObject:
    """A v1.0 `riskDetection` as it reads after `version.number` changes."""
    rng = random.Random(f"{seed}:riskDetections:{version.record}")
    event_type, timing, activity = rng.choice(_RISK_EVENTS)
    name, alias = rng.choice(_PEOPLE)
    city, state, country, lat, lon = rng.choice(_PLACES)
    level = rng.choice(("low", "medium", "high"))
    agent = 'Mozilla/5.0 (Windows NT 10.0) "headless" \\ scripted'
    info = [{"Key": "userAgent", "Value": agent}, {"Key": "alertUrl", "Value": None}]
    path = _path(rng, _RISK_CHANGES)
    risk_state, risk_detail = ("atRisk", "none") if version.number == 0 else path[version.number]
    created = iso_from_ticks(version.created_ticks)
    return {
        "id": risk_detection_id(seed, version.record),
        "requestId": stable_guid(seed, "risk-request", version.record),
        "correlationId": stable_guid(seed, "risk-correlation", version.record),
        "riskEventType": event_type,
        "riskState": risk_state,
        "riskLevel": "none" if risk_state in ("remediated", "dismissed") else level,
        "riskDetail": risk_detail,
        "source": "IdentityProtection",
        "detectionTimingType": timing,
        "activity": activity,
        "tokenIssuerType": "AzureAD",
        "ipAddress": ip_address(rng),
        "location": {
            "city": city,
            "state": state,
            "countryOrRegion": country,
            "geoCoordinates": {"altitude": None, "latitude": lat, "longitude": lon},
        },
        "activityDateTime": created,
        "detectedDateTime": created,
        "lastUpdatedDateTime": iso_from_ticks(version.ticks),
        "userId": stable_guid(seed, "user", alias),
        "userDisplayName": name,
        "userPrincipalName": f"{alias}@contoso.onmicrosoft.com",
        "additionalInfo": json.dumps(info, ensure_ascii=False, separators=(",", ":")),
    }


def alert(seed: int, version: Version) -> JsonObject:
    """A v1.0 `security.alert` (alerts_v2): new, then in progress, resolved, commented."""
    rng = random.Random(f"{seed}:alerts:{version.record}")
    title, category, service, detection, techniques = rng.choice(_ALERTS)
    name, alias = rng.choice(_PEOPLE)
    analyst = rng.choice(_ANALYSTS)
    classification, determination = rng.choice(_VERDICTS)
    record_id = alert_id(seed, version.record)
    incident = str(20_000 + version.record)
    tenant = tenant_guid(seed)
    created = iso_from_ticks(version.created_ticks)
    updated = iso_from_ticks(version.ticks)
    step = version.number
    resolved = step >= 2
    return {
        "@odata.type": "#microsoft.graph.security.alert",
        "id": record_id,
        "providerAlertId": record_id,
        "incidentId": incident,
        "status": ("new", "inProgress")[step] if step < 2 else "resolved",
        "severity": rng.choice(("informational", "low", "medium", "high")),
        "classification": classification if resolved else None,
        "determination": determination if resolved else None,
        "serviceSource": service,
        "detectionSource": detection,
        "detectorId": stable_guid(seed, "detector", title),
        "tenantId": tenant,
        "title": title,
        "description": f"{title} involving {name}.\nReview the evidence.",
        "recommendedActions": "1. Contact the user.\n2. Reset the password if needed.",
        "category": category,
        "assignedTo": analyst if step >= 1 else None,
        "alertWebUrl": f"https://security.microsoft.com/alerts/{record_id}?tid={tenant}",
        "incidentWebUrl": f"https://security.microsoft.com/incidents/{incident}?tid={tenant}",
        "actorDisplayName": None,
        "threatDisplayName": None,
        "threatFamilyName": None,
        "mitreTechniques": techniques,
        "createdDateTime": created,
        "lastUpdateDateTime": updated,
        "resolvedDateTime": updated if step == 2 else None,
        "firstActivityDateTime": created,
        "lastActivityDateTime": created,
        "comments": [
            {
                "comment": f"Reviewed: {classification}, change {n}.",
                "createdByDisplayName": analyst,
                "createdDateTime": updated,
            }
            for n in range(3, step + 1)
        ],
        "evidence": [
            {
                "@odata.type": "#microsoft.graph.security.userEvidence",
                "createdDateTime": created,
                "verdict": "suspicious",
                "remediationStatus": "none",
                "remediationStatusDetails": None,
                "roles": [],
                "tags": [],
                "userAccount": {
                    "accountName": alias,
                    "domainName": "contoso.onmicrosoft.com",
                    "userSid": None,
                    "azureAdUserId": stable_guid(seed, "user", alias),
                    "userPrincipalName": f"{alias}@contoso.onmicrosoft.com",
                    "displayName": name,
                },
            },
            {
                "@odata.type": "#microsoft.graph.security.ipEvidence",
                "createdDateTime": created,
                "verdict": "unknown",
                "remediationStatus": "none",
                "remediationStatusDetails": None,
                "roles": [],
                "tags": [],
                "ipAddress": ip_address(rng),
                "countryLetterCode": rng.choice(_PLACES)[2],
            },
        ],
        "systemTags": [],
        "additionalData": {},
    }
