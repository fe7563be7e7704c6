"""The identity platform of the simulated tenant: OpenID discovery and the client-credentials
token endpoint MSAL talks to, failing with AADSTS errors shaped like Microsoft's."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from exporter.sim import objects
from exporter.sim.faults import Faults
from exporter.sim.messages import Request, Response, json_response
from exporter.sim.state import TokenStore

_RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access"})
_JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# AADSTS code -> (HTTP status, OAuth error, description template)
AADSTS_ERRORS: dict[int, tuple[int, str, str]] = {
    7000215: (
        401,
        "invalid_client",
        "Invalid client secret provided. Ensure the secret being sent in the request is the "
        "client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
    ),
    7000222: (
        401,
        "invalid_client",
        "The provided client secret keys for app '{client_id}' are expired. Visit the Azure "
        "portal to create new keys for your app.",
    ),
    7000218: (
        401,
        "invalid_client",
        "The request body must contain the following parameter: 'client_assertion' or "
        "'client_secret'.",
    ),
    700016: (
        400,
        "unauthorized_client",
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'.",
    ),
    90002: (400, "invalid_request", "Tenant '{tenant}' not found."),
    70011: (
        400,
        "invalid_scope",
        "The provided value for the input parameter 'scope' is not valid. "
        "The scope {scope} is not valid.",
    ),
    70003: (400, "unsupported_grant_type", "The app requested an unsupported grant type."),
    90033: (503, "temporarily_unavailable", "A transient error has occurred. Please try again."),
}


@dataclass(frozen=True)
class Registration:
    """The tenant's names and its one app registration; the secret is new in every process,
    so that nothing can depend on it being known in advance."""

    tenant_id: str
    tenant_guid: str
    client_id: str
    client_secret: str

    @classmethod
    def create(cls, seed: int) -> Registration:
        """The stable names of a seed's tenant and app, with a fresh random secret."""
        return cls(
            tenant_id="contoso.onmicrosoft.com",
            tenant_guid=objects.tenant_guid(seed),
            client_id=objects.stable_guid(seed, "client"),
            client_secret=f"sim~{secrets.token_urlsafe(30)}",
        )


def _jwt_is_well_formed(token: str) -> bool:
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        for part in parts[:2]:
            json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError):
        return False
    return True


class IdentityPlatform:
    """Answers discovery and token requests for one tenant and one confidential client.

    Only the client-credentials grant exists, with a secret or a (shape-checked) client
    assertion; the token's audience must be the tenant's own Graph (`{base_url}/.default`).
    """

    def __init__(
        self,
        registration: Registration,
        base_url: Callable[[], str],
        clock: Callable[[], float],
        faults: Faults,
        tokens: TokenStore,
    ) -> None:
        self._registration = registration
        self._base_url = base_url
        self._clock = clock
        self._faults = faults
        self._tokens = tokens

    def _known_tenant(self, tenant: str) -> bool:
        reg = self._registration
        return tenant.lower() in (reg.tenant_id.lower(), reg.tenant_guid)

    def openid_configuration(self, tenant: str) -> Response:
        """The discovery document MSAL reads before its first token request."""
        if not self._known_tenant(tenant):
            return self._aadsts(90002, tenant=tenant)
        base_url, guid = self._base_url(), self._registration.tenant_guid
        base = f"{base_url}/{tenant}"
        return json_response(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base_url}/{guid}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "token id_token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{base_url}/{guid}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "tenant_region_scope": "EU",
            },
        )

    def _aadsts(self, code: int, **details: str) -> Response:
        status, error, template = AADSTS_ERRORS.get(
            code, (400, "invalid_request", "Simulated failure.")
        )
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
        reg = self._registration
        fields = {"client_id": reg.client_id, "tenant": reg.tenant_id, "scope": "", **details}
        description = (
            f"AADSTS{code}: {template.format(**fields)} Trace ID: {trace_id} "
            f"Correlation ID: {correlation_id} Timestamp: {stamp}"
        )
        return json_response(
            status,
            {
                "error": error,
                "error_description": description,
                "error_codes": [code],
                "timestamp": stamp,
                "trace_id": trace_id,
                "correlation_id": correlation_id,
                "error_uri": f"{self._base_url()}/error?code={code}",
            },
        )

    def token(self, request: Request, tenant: str) -> Response:
        """Check a token request in Microsoft's order of checks, then issue a bearer token."""
        if self._faults.take("token_failures"):
            return self._aadsts(self._faults.snapshot().token_error, tenant=tenant)
        if not self._known_tenant(tenant):
            return self._aadsts(90002, tenant=tenant)
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return self._aadsts(70003)
        reg = self._registration
        if form.get("client_id") != reg.client_id:
            return self._aadsts(700016, client_id=form.get("client_id", ""), tenant=tenant)
        secret, assertion = form.get("client_secret"), form.get("client_assertion")
        if secret is None and assertion is None:
            return self._aadsts(7000218)
        if secret is not None and not secrets.compare_digest(
            secret.encode(), reg.client_secret.encode()
        ):
            return self._aadsts(7000215)
        if assertion is not None and not (
            form.get("client_assertion_type") == _JWT_BEARER and _jwt_is_well_formed(assertion)
        ):
            return self._aadsts(7000215)
        if assertion is not None:
            self._tokens.note_assertion(assertion)
        scopes = form.get("scope", "").split()
        wanted = f"{self._base_url()}/.default"
        if wanted not in scopes or not set(scopes) <= _RESERVED_SCOPES | {wanted}:
            return self._aadsts(70011, scope=form.get("scope", ""))
        token, lifetime = self._tokens.issue()
        return json_response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            },
        )
