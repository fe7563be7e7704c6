"""Beta `signIn` objects of the streams v1.0 does not serve: non-interactive user sign-ins,
service principal sign-ins and managed identity sign-ins.

Like :mod:`exporter.sim.objects`, each object is a pure function of (seed, sequence number,
event time), drawn from an rng seeded per stream and seq, so a page re-fetched is the same
byte for byte and no two streams share an id. They carry what tells the streams apart in a
SIEM: `signInEventTypes`, `isInteractive: false`, and for workloads a service principal and
no user, plus `managedServiceIdentity` for managed identities.
"""

from __future__ import annotations

import random

from exporter.sim.objects import (
    JsonObject,
    ip_address,
    iso_from_ticks,
    stable_guid,
    tenant_guid,
    user_signin,
)

NON_INTERACTIVE = "nonInteractiveUser"
SERVICE_PRINCIPAL = "servicePrincipal"
MANAGED_IDENTITY = "managedIdentity"

# Failures of a token refresh, not of someone typing a password.
_REFRESH_FAILURES = (
    (
        50173,
        "The provided grant has expired due to it being revoked, a fresh auth token is needed.",
    ),
    (70044, "The session has expired or is invalid due to sign-in frequency checks."),
    (50078, "Presented multi-factor authentication has expired due to policies configured."),
)
_RESOURCES = (
    ("Microsoft Graph", "00000003-0000-0000-c000-000000000000"),
    ("Windows Azure Service Management API", "797f4846-ba00-4fd7-ba43-dac1f8f63013"),
    ("Azure Key Vault", "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"),
    ("Azure Storage", "e406a681-f3d4-42a8-90b6-c2b029497af1"),
)
_SERVICE_PRINCIPALS = (
    "contoso-backup-runner",
    "terraform-ci",
    "Ünïcode ETL – nightly",  # noqa: RUF001 (non-ASCII on purpose)
    'legacy "sync" \\ connector',
)
_CREDENTIAL_TYPES = ("clientSecret", "certificate", "federatedIdentityCredential")
_MANAGED_IDENTITIES = (
    ("vm-web-01", "Microsoft.Compute/virtualMachines", "systemAssigned"),
    ("func-orders", "Microsoft.Web/sites", "systemAssigned"),
    ("id-aks-agentpool", "Microsoft.ManagedIdentity/userAssignedIdentities", "userAssigned"),
)
_WORKLOAD_FAILURES = (
    (7000215, "Invalid client secret provided."),
    (700027, "Client assertion failed signature validation."),
)
_AZURE_REGIONS = (
    ("Amsterdam", "Noord-Holland", "NL", 52.37, 4.89),
    ("Dublin", "Dublin", "IE", 53.35, -6.26),
    ("Boydton", "Virginia", "US", 36.67, -78.39),
)


def event_id(stream: str, seed: int, seq: int) -> str:
    """The GUID id of event `seq` of a beta-only stream; stable for a seed, unique across streams."""
    return stable_guid(seed, stream, seq)


def _token_id(seed: int, stream: str, seq: int) -> str:
    return stable_guid(seed, f"{stream}-token", seq).replace("-", "")[:22]


def non_interactive(seed: int, seq: int, ticks: int) -> JsonObject:
    """A client refreshing a user's token with no one at the keyboard.

    Same shape as an interactive sign-in (same users, apps, devices), but from its own rng,
    not interactive, and failing as refreshes fail.
    """
    event = user_signin(seed, NON_INTERACTIVE, seq, ticks)
    rng = random.Random(f"{seed}:{NON_INTERACTIVE}-beta:{seq}")
    if event["status"]["errorCode"] not in (0, 53003):
        code, reason = rng.choice(_REFRESH_FAILURES)
        event["status"] = {"errorCode": code, "failureReason": reason, "additionalDetails": None}
    event.update(
        signInEventTypes=[NON_INTERACTIVE],
        isInteractive=False,
        clientAppUsed="Mobile Apps and Desktop clients",
        incomingTokenType=rng.choice(("primaryRefreshToken", "refreshToken", "none")),
        authenticationRequirement="singleFactorAuthentication",
        tokenIssuerType="AzureAD",
        userType="member",
        uniqueTokenIdentifier=_token_id(seed, NON_INTERACTIVE, seq),
    )
    return event


def _workload(
    seed: int, stream: str, seq: int, ticks: int, rng: random.Random, name: str
) -> JsonObject:
    """The fields service principal and managed identity sign-ins share: an app, no user."""
    app_id = stable_guid(seed, "workload-app", name)
    resource_name, resource_id = rng.choice(_RESOURCES)
    city, state, country, lat, lon = rng.choice(_AZURE_REGIONS)
    code, reason = rng.choice(_WORKLOAD_FAILURES) if rng.random() < 0.04 else (0, None)
    return {
        "id": event_id(stream, seed, seq),
        "createdDateTime": iso_from_ticks(ticks),
        "signInEventTypes": [stream],
        "isInteractive": False,
        "userDisplayName": None,
        "userPrincipalName": None,
        "userId": "",
        "appId": app_id,
        "appDisplayName": name,
        "servicePrincipalId": stable_guid(seed, "sp", app_id),
        "servicePrincipalName": name,
        "ipAddress": ip_address(rng),
        "correlationId": stable_guid(seed, f"{stream}-correlation", seq),
        "conditionalAccessStatus": "notApplied",
        "homeTenantId": tenant_guid(seed),
        "resourceDisplayName": resource_name,
        "resourceId": resource_id,
        "resourceTenantId": tenant_guid(seed),
        "tokenIssuerType": "AzureAD",
        "uniqueTokenIdentifier": _token_id(seed, stream, seq),
        "status": {"errorCode": code, "failureReason": reason, "additionalDetails": None},
        "location": {
            "city": city,
            "state": state,
            "countryOrRegion": country,
            "geoCoordinates": {"altitude": None, "latitude": lat, "longitude": lon},
        },
        "appliedConditionalAccessPolicies": [],
    }


def service_principal(seed: int, seq: int, ticks: int) -> JsonObject:
    """An application signing in as itself with a secret, a certificate or a federated token."""
    rng = random.Random(f"{seed}:{SERVICE_PRINCIPAL}:{seq}")
    event = _workload(seed, SERVICE_PRINCIPAL, seq, ticks, rng, rng.choice(_SERVICE_PRINCIPALS))
    credential = rng.choice(_CREDENTIAL_TYPES)
    event.update(
        clientCredentialType=credential,
        servicePrincipalCredentialKeyId=stable_guid(seed, "credential", event["appId"]),
        servicePrincipalCredentialThumbprint=stable_guid(seed, "thumbprint", event["appId"])
        .replace("-", "")[:40]
        .upper()
        if credential == "certificate"
        else "",
    )
    return event


def managed_identity(seed: int, seq: int, ticks: int) -> JsonObject:
    """An Azure resource getting a token for its managed identity: no secret to leak."""
    rng = random.Random(f"{seed}:{MANAGED_IDENTITY}:{seq}")
    name, provider, msi_type = rng.choice(_MANAGED_IDENTITIES)
    event = _workload(seed, MANAGED_IDENTITY, seq, ticks, rng, name)
    subscription = stable_guid(seed, "subscription")
    event.update(
        clientCredentialType="managedIdentity",
        managedServiceIdentity={
            "msiType": msi_type,
            "associatedResourceId": f"/subscriptions/{subscription}/resourceGroups/rg-prod"
            f"/providers/{provider}/{name}",
            "federatedTokenId": None,
            "federatedTokenIssuer": None,
        },
    )
    return event
