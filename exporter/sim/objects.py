"""Realistic Graph `signIn` and `directoryAudit` JSON objects for the simulated tenant.

Each object is a pure function of (seed, sequence number, event time), so the tenant never
stores payloads: a million-event timeline costs two arrays, and a page re-fetched later is
byte-for-byte the same. The data deliberately carries what breaks naive pipelines: non-ASCII
names, user agents with quotes and backslashes, JSON-in-strings, nulls, and the schema
drift users report (`initiatedBy.app` present as null, as an object, or absent).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import uuid
from typing import Any

from exporter.sim.timeline import TICKS_PER_SECOND

JsonObject = dict[str, Any]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_USERS = (
    ("Adele Vance", "AdeleV"),
    ("Zoë Ångström", "zoe.angstrom"),
    ("李雷", "li.lei"),
    ("Søren Kierkegård", "soren.k"),
    ("José Núñez", "jose.nunez"),
    ("Ðặng Thị Hương", "huong.dang"),
    ("Megan Bowen", "MeganB"),
    ("O'Brien, Siobhán", "siobhan.obrien"),
)
_APPS = (
    ("Office 365 Exchange Online", "00000002-0000-0ff1-ce00-000000000000"),
    ("Microsoft Teams", "1fec8e78-bce4-4aaf-ab1b-5451cc387264"),
    ("Azure Portal", "c44b4083-3bb0-49c1-b47d-974e53cbdf3c"),
    ("Microsoft Authentication Broker", "29d9ed98-a469-4536-ade2-f981bc1d605e"),
    ("Office 365 SharePoint Online", "00000003-0000-0ff1-ce00-000000000000"),
)
_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    'Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro) "quoted"',
    'curl/8.5.0 "scripted \\ sign-in"',
)
_DEVICES = (
    ("Edge 124.0.0", "Windows10", "Azure AD joined", True, True),
    ("Mobile Safari 17.4", "Ios", "", False, False),
    ("Chrome 124.0.0", "MacOs", "Azure AD registered", True, False),
    ("Rich Client 16.0.17328", "Windows10", "Hybrid Azure AD joined", True, True),
)
_LOCATIONS = (
    ("Redmond", "Washington", "US", 47.68, -122.12),
    ("München", "Bayern", "DE", 48.14, 11.58),
    ("São Paulo", "São Paulo", "BR", -23.55, -46.63),
    ("北京", "北京市", "CN", 39.90, 116.41),
    ("Zürich", "Zürich", "CH", 47.37, 8.54),
)
_FAILURES = (
    (50126, "Error validating credentials due to invalid username or password."),
    (50074, "Strong Authentication is required."),
    (53003, "Access has been blocked by Conditional Access policies."),
    (
        50140,
        "This error occurred due to 'Keep me signed in' interrupt when the user was signing in.",
    ),
)
_CA_POLICIES: tuple[tuple[str, list[str], list[str]], ...] = (
    ("Require MFA for admins", ["Mfa"], []),
    ("Block legacy authentication", ["Block"], []),
    ("Sign-in frequency – 8 h", [], ["SignInFrequency"]),  # noqa: RUF001 (non-ASCII on purpose)
)
_CA_RESULTS = ("success", "notApplied", "notEnabled", "reportOnlyNotApplied", "failure")
_ACTIVITIES = (
    ("Add user", "UserManagement", "Add", "Core Directory"),
    ("Update user", "UserManagement", "Update", "Core Directory"),
    ("Add member to group", "GroupManagement", "Add", "Core Directory"),
    ("Reset password (by admin)", "UserManagement", "Reset", "Self-service Password Management"),
    ("Consent to application", "ApplicationManagement", "Assign", "Core Directory"),
    (
        "Update application – Certificates and secrets management ",  # noqa: RUF001 (real name)
        "ApplicationManagement",
        "Update",
        "Core Directory",
    ),
)


def iso_from_ticks(ticks: int) -> str:
    """Render 100 ns ticks since the epoch the way Graph does: 7 fractional digits and Z."""
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    stamp = _EPOCH + dt.timedelta(seconds=seconds)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{fraction:07d}Z"


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()


def stable_guid(*parts: object) -> str:
    """A version-4-shaped GUID that is a pure function of `parts` (same seed, same ids)."""
    return str(uuid.UUID(bytes=_digest(*parts)[:16], version=4))


def signin_id(seed: int, seq: int) -> str:
    """The GUID id of sign-in number `seq`; stable for a seed, unique per event."""
    return stable_guid(seed, "signIns", seq)


def directory_audit_id(seed: int, seq: int) -> str:
    """The id of audit record `seq`, in Graph's `Directory_<hex>_<n>` shape."""
    return f"Directory_{_digest(seed, 'directoryAudits', seq)[:5].hex().upper()}_{seq}"


def tenant_guid(seed: int) -> str:
    """The directory (tenant) GUID that goes with a seed."""
    return stable_guid(seed, "tenant")


def _user(seed: int, rng: random.Random) -> JsonObject:
    index = rng.randrange(len(_USERS))
    name, alias = _USERS[index]
    return {
        "id": stable_guid(seed, "user", index),
        "displayName": name,
        "userPrincipalName": f"{alias}@contoso.onmicrosoft.com",
    }


def ip_address(rng: random.Random) -> str:
    """A client address from the documentation ranges, a fifth of them IPv6."""
    if rng.random() < 0.2:
        return f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}"
    return f"203.0.113.{rng.randrange(1, 255)}"


def signin(seed: int, seq: int, ticks: int) -> JsonObject:
    """A v1.0 `signIn` resource with every documented property."""
    return user_signin(seed, "signIns", seq, ticks)


def user_signin(seed: int, stream: str, seq: int, ticks: int) -> JsonObject:
    """A user's sign-in of `stream`, drawn from its own seeded rng so streams differ.

    `signIns` (the interactive ones) is what v1.0 serves; the non-interactive stream of
    :mod:`exporter.sim.beta_signins` starts from the same shape.
    """
    rng = random.Random(f"{seed}:{stream}:{seq}")
    user = _user(seed, rng)
    app_name, app_id = rng.choice(_APPS)
    browser, os_name, trust, compliant, managed = rng.choice(_DEVICES)
    city, state, country, lat, lon = rng.choice(_LOCATIONS)
    failed = rng.random() < 0.15
    error_code, failure_reason = rng.choice(_FAILURES) if failed else (0, "Other.")
    policies = [
        {
            "id": stable_guid(seed, "policy", name),
            "displayName": name,
            "enforcedGrantControls": grants,
            "enforcedSessionControls": sessions,
            "result": rng.choice(_CA_RESULTS),
        }
        for name, grants, sessions in rng.sample(_CA_POLICIES, rng.randrange(len(_CA_POLICIES)))
    ]
    risk = rng.choices(("none", "low", "medium", "hidden"), weights=(85, 8, 3, 4))[0]
    return {
        "id": stable_guid(seed, stream, seq),
        "createdDateTime": iso_from_ticks(ticks),
        "userDisplayName": user["displayName"],
        "userPrincipalName": user["userPrincipalName"],
        "userId": user["id"],
        "appId": app_id,
        "appDisplayName": app_name,
        "ipAddress": ip_address(rng),
        "clientAppUsed": rng.choice(("Browser", "Mobile Apps and Desktop clients")),
        "correlationId": stable_guid(seed, f"{stream}-correlation", seq),
        "conditionalAccessStatus": "failure"
        if error_code == 53003
        else rng.choice(("success", "notApplied")),
        "isInteractive": True,
        "homeTenantId": tenant_guid(seed),
        "resourceDisplayName": "Microsoft Graph",
        "resourceId": "00000003-0000-0000-c000-000000000000",
        "resourceTenantId": tenant_guid(seed),
        "servicePrincipalId": "",
        "servicePrincipalName": None,
        "userAgent": rng.choice(_USER_AGENTS),
        "riskDetail": "hidden" if risk == "hidden" else "none",
        "riskLevelAggregated": risk,
        "riskLevelDuringSignIn": risk,
        "riskState": "atRisk" if risk in ("low", "medium") else "none",
        "riskEventTypes": ["unfamiliarFeatures"] if risk in ("low", "medium") else [],
        "riskEventTypes_v2": ["unfamiliarFeatures"] if risk in ("low", "medium") else [],
        "status": {
            "errorCode": error_code,
            "failureReason": failure_reason,
            "additionalDetails": "MFA requirement satisfied by claim in the token"
            if not failed and rng.random() < 0.3
            else None,
        },
        "deviceDetail": {
            "deviceId": stable_guid(seed, "device", browser) if trust else "",
            "displayName": f"DESKTOP-{_digest(seed, browser)[:3].hex().upper()}" if trust else "",
            "operatingSystem": os_name,
            "browser": browser,
            "isCompliant": compliant,
            "isManaged": managed,
            "trustType": trust,
        },
        "location": {
            "city": city,
            "state": state,
            "countryOrRegion": country,
            "geoCoordinates": {"altitude": None, "latitude": lat, "longitude": lon},
        },
        "appliedConditionalAccessPolicies": policies,
        "authenticationAppDeviceDetails": None,
    }


def _initiator(seed: int, rng: random.Random) -> JsonObject:
    if rng.random() < 0.25:
        app_name, app_id = rng.choice(_APPS)
        return {
            "app": {
                "appId": app_id,
                "displayName": app_name,
                "servicePrincipalId": stable_guid(seed, "sp", app_id),
                "servicePrincipalName": None,
            },
            "user": None,
        }
    user = {
        **_user(seed, rng),
        "ipAddress": ip_address(rng),
        "userType": None,
        "homeTenantId": None,
    }
    if rng.random() < 0.1:
        return {"user": user}
    return {"app": None, "user": user}


def directory_audit(seed: int, seq: int, ticks: int) -> JsonObject:
    """A v1.0 `directoryAudit` resource, including the nulls and drift seen in the field."""
    rng = random.Random(f"{seed}:directoryAudits:{seq}")
    activity, category, operation, service = rng.choice(_ACTIVITIES)
    target = _user(seed, rng)
    old_name, new_name = rng.sample([name for name, _ in _USERS], 2)
    failed = rng.random() < 0.05
    return {
        "id": directory_audit_id(seed, seq),
        "category": category,
        "correlationId": stable_guid(seed, "directoryAudits-correlation", seq),
        "result": "failure" if failed else "success",
        "resultReason": "Microsoft.Online.Workflows.ObjectNotFoundException" if failed else "",
        "activityDisplayName": activity,
        "activityDateTime": iso_from_ticks(ticks),
        "loggedByService": service,
        "operationType": operation,
        "initiatedBy": _initiator(seed, rng),
        "targetResources": [
            {
                "id": target["id"],
                "displayName": None,
                "type": "User",
                "userPrincipalName": target["userPrincipalName"],
                "groupType": None,
                "modifiedProperties": [
                    {
                        "displayName": "DisplayName",
                        "oldValue": f'["{old_name}"]',
                        "newValue": f'["{new_name}"]',
                    },
                    {
                        "displayName": "Included Updated Properties",
                        "oldValue": None,
                        "newValue": '"DisplayName"',
                    },
                ],
            }
        ],
        "additionalDetails": [
            {"key": "UserType", "value": "Member"},
            {"key": "User-Agent", "value": rng.choice(_USER_AGENTS)},
        ],
    }


TENANT_POLICY_COUNT = 18  # Conditional Access policies: makes the average sign-in 11.5 KB
_CONDITIONS = ("application", "users", "platform", "location", "clientType", "signInRisk")


def _policy_evaluation(seed: int, rng: random.Random, number: int) -> JsonObject:
    """How one of the tenant's policies applied to a sign-in, with beta's evaluation detail."""
    name, grants, sessions = _CA_POLICIES[number % len(_CA_POLICIES)]
    satisfied = rng.sample(_CONDITIONS, rng.randrange(1, 4))
    return {
        "id": stable_guid(seed, "tenant-policy", number),
        "displayName": f"CA{number:03d} – {name}",  # noqa: RUF001 (non-ASCII on purpose)
        "enforcedGrantControls": grants,
        "enforcedSessionControls": sessions,
        "result": rng.choice(_CA_RESULTS),
        "conditionsSatisfied": ",".join(satisfied),
        "conditionsNotSatisfied": "none" if len(satisfied) > 2 else "users",
        "includeRulesSatisfied": [
            {"conditionalAccessCondition": c, "ruleSatisfied": "allApps"} for c in satisfied
        ],
        "excludeRulesSatisfied": [],
        "sessionControlsNotSatisfied": [],
        "authenticationStrength": None,
    }


def tenant_scale_signin(seed: int, seq: int, ticks: int) -> JsonObject:
    """A beta `signIn` as a real tenant writes it: about 11.5 KB, Microsoft's stated average.

    Graph lists every Conditional Access policy of the tenant on every sign-in, applied or
    not, with its evaluation; that list, the authentication steps and the processing details
    are what make real sign-ins five times the size of a bare one. Benchmarks and tests of
    throughput and framing use this shape so that batches are as large as in production.
    """
    event = signin(seed, seq, ticks)
    rng = random.Random(f"{seed}:tenantScale:{seq}")
    succeeded = event["status"]["errorCode"] == 0
    event["appliedConditionalAccessPolicies"] = [
        _policy_evaluation(seed, rng, number) for number in range(TENANT_POLICY_COUNT)
    ]
    event["authenticationDetails"] = [
        {
            "authenticationStepDateTime": event["createdDateTime"],
            "authenticationMethod": method,
            "authenticationMethodDetail": detail,
            "succeeded": succeeded,
            "authenticationStepResultDetail": "MFA completed in Azure AD"
            if succeeded
            else "Authentication failed",
            "authenticationStepRequirement": "Primary authentication",
        }
        for method, detail in (("Password", "Password in the cloud"), ("Mobile app", "Push"))
    ]
    event["authenticationProcessingDetails"] = [
        {"key": "Legacy TLS (TLS 1.0, 1.1, 3DES)", "value": "False"},
        {"key": "Is CAE Token", "value": "True"},
        {"key": "Oauth Scope Info", "value": '["AuditLog.Read.All","Directory.Read.All"]'},
    ]
    event["networkLocationDetails"] = [{"networkType": "namedNetwork", "networkNames": ["HQ"]}]
    event["mfaDetail"] = {"authMethod": "PhoneAppNotification", "authDetail": None}
    return event
