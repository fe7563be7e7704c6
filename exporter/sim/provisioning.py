"""Graph `provisioningObjectSummary` objects: what the provisioning service did to one
identity in one cycle (create a user in Salesforce, disable one in ServiceNow, skip one).

Like :mod:`exporter.sim.objects`, each object is a pure function of (seed, sequence number,
event time), drawn from an rng seeded per seq, so a page re-fetched is the same byte for
byte. The shape follows Graph v1.0: the job and cycle, source and target systems and
identities, the steps with their own status, and the modified properties, with the error
details Graph fills in on failure and the nulls it leaves otherwise.
"""

from __future__ import annotations

import random

from exporter.sim.objects import JsonObject, iso_from_ticks, stable_guid, tenant_guid

_APPS = (
    ("Salesforce", "salesforce"),
    ("ServiceNow", "servicenow"),
    ("Workday to Microsoft Entra user provisioning", "workday"),
    ("Atlassian Cloud", "atlassian"),
)
_ACTIONS = ("create", "update", "update", "update", "disable", "delete", "other")
_PEOPLE = ("Adele Vance", "Zoë Ångström", "李雷", "O'Brien, Siobhán", "José Núñez")
_FAILURES = (
    (
        "SalesforceDuplicateUserName",
        "The user name is already in use in the target tenant.",
        "NonServiceFailure",
        "Change the user name in the source system or remove the duplicate in the target.",
    ),
    (
        "HttpRequestTimeout",
        "The request to the target application timed out.",
        "TransientError",
        None,
    ),
)
_STEPS = (
    ("EntryImport", "import", "Retrieved {name} from Microsoft Entra ID"),
    ("EntrySynchronizationScoping", "scoping", "{name} is in scope: assigned to the app"),
    ("EntryExportUpdate", "export", "{name} was {action}d in {app}"),
)


def provisioning_id(seed: int, seq: int) -> str:
    """The GUID id of provisioning record `seq`; stable for a seed, unique per record."""
    return stable_guid(seed, "provisioning", seq)


def provisioning(seed: int, seq: int, ticks: int) -> JsonObject:
    """One provisioning event of an app's provisioning job, success, skip or failure."""
    rng = random.Random(f"{seed}:provisioning:{seq}")
    app, job_prefix = rng.choice(_APPS)
    action = rng.choice(_ACTIONS)
    person = rng.choice(_PEOPLE)
    outcome = rng.choices(("success", "skipped", "failure", "warning"), (80, 10, 7, 3))[0]
    app_id = stable_guid(seed, "provisioning-app", app)
    sp_id = stable_guid(seed, "sp", app_id)
    error = None
    if outcome == "failure":
        code, reason, category, advice = rng.choice(_FAILURES)
        error = {
            "errorCode": code,
            "reason": reason,
            "additionalDetails": f'{{"target":"{app}","attempt":{rng.randint(1, 5)}}}',
            "errorCategory": category,
            "recommendedAction": advice,
        }
    steps = [
        {
            "name": name,
            "provisioningStepType": kind,
            "status": outcome if kind == "export" and outcome != "warning" else "success",
            "description": text.format(name=person, action=action, app=app),
            "details": {"SourceAnchor": stable_guid(seed, "user", person)}
            if kind == "import"
            else {},
        }
        for name, kind, text in _STEPS[: 2 if outcome == "skipped" else 3]
    ]
    return {
        "id": provisioning_id(seed, seq),
        "activityDateTime": iso_from_ticks(ticks),
        "tenantId": tenant_guid(seed),
        "jobId": f"{job_prefix}.{tenant_guid(seed).replace('-', '')}.{app_id.replace('-', '')}",
        "cycleId": stable_guid(seed, "provisioning-cycle", seq // 50),
        "changeId": stable_guid(seed, "provisioning-change", seq),
        "durationInMilliseconds": rng.randint(40, 9000),
        "initiatedBy": {
            "id": "",
            "displayName": "Azure AD Provisioning Service",
            "initiatorType": "system",
        },
        "servicePrincipal": {"id": sp_id, "displayName": app},
        "sourceSystem": {
            "id": stable_guid(seed, "provisioning-source"),
            "displayName": "Azure Active Directory",
            "details": {},
        },
        "targetSystem": {
            "id": stable_guid(seed, "provisioning-target", app),
            "displayName": app,
            "details": {
                "ApplicationId": app_id,
                "ServicePrincipalId": sp_id,
                "ServicePrincipalDisplayName": app,
            },
        },
        "sourceIdentity": {
            "id": stable_guid(seed, "user", person),
            "displayName": person,
            "identityType": "User",
            "details": {},
        },
        "targetIdentity": {
            "id": ""
            if action == "create" and outcome != "success"
            else stable_guid(seed, app, person),
            "displayName": person,
            "identityType": "User",
            "details": {},
        },
        "provisioningAction": action,
        "provisioningStatusInfo": {"status": outcome, "errorInformation": error},
        "provisioningSteps": steps,
        "modifiedProperties": [
            {
                "displayName": "accountEnabled",
                "oldValue": None,
                "newValue": str(action != "disable"),
            },
            {"displayName": "displayName", "oldValue": None, "newValue": person},
        ],
    }
