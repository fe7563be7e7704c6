"""Access tokens for Graph, from MSAL, shared by every source of a tenant.

MSAL caches the token and refreshes it five minutes before expiry; this module adds the
credential forms of the config, a lock so that concurrent sources ask once, and failure
accounting: each failure is counted in ``token_failures_total{reason}`` with a reason from a
fixed set and logged with its AADSTS code, never with the secret.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import msal
import requests

from exporter.clock import Clock
from exporter.config import Config
from exporter.credentials import (
    CertificateCredential,
    ClientSecretCredential,
    WorkloadIdentityCredential,
)
from exporter.errors import TokenError
from exporter.https import VerifiedSession
from exporter.logs import fields
from exporter.metrics import ExporterMetrics

log = logging.getLogger(__name__)

_REASONS = {
    "invalid_client": "invalid_client",
    "unauthorized_client": "unauthorized_client",
    "invalid_scope": "invalid_scope",
}


def client_credential(config: Config) -> str | dict[str, Any]:
    """The ``client_credential`` argument MSAL expects for the configured credential."""
    credential = config.credential
    if isinstance(credential, ClientSecretCredential):
        return credential.secret.reveal()
    if isinstance(credential, CertificateCredential):
        value: dict[str, Any] = {
            "private_key": credential.private_key.reveal(),
            "thumbprint": credential.thumbprint,
        }
        if credential.public_certificate:
            value["public_certificate"] = credential.public_certificate
        return value
    if isinstance(credential, WorkloadIdentityCredential):
        return {"client_assertion": federated_token_reader(credential.token_file)}
    raise TypeError(f"unknown credential {type(credential).__name__}")


def federated_token_reader(path: str) -> Callable[[], str]:
    """A callable that re-reads the projected service-account token, which kubelet rotates."""

    def read() -> str:
        return Path(path).read_text(encoding="utf-8").strip()

    return read


def classify(result: dict[str, Any]) -> tuple[str, str]:
    """A failed MSAL result to (reason label, loggable detail with the AADSTS code)."""
    error = str(result.get("error", "other"))
    codes = result.get("error_codes") or []
    description = str(result.get("error_description", "")).splitlines()[0:1]
    aadsts = f"AADSTS{codes[0]}" if codes else "no AADSTS code"
    detail = f"{error} ({aadsts}): {description[0] if description else ''}".strip()
    return _REASONS.get(error, "other"), detail[:300]


class TokenProvider:
    """Hands out a valid bearer token for ``resource`` (``graph_url`` unless told); thread-safe."""

    def __init__(
        self,
        config: Config,
        metrics: ExporterMetrics,
        clock: Clock,
        http: VerifiedSession,
        resource: str | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.http = http
        self.scopes = [f"{resource or config.graph_url}/.default"]
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()

    def _application(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            self._app = msal.ConfidentialClientApplication(
                self.config.client_id,
                client_credential=client_credential(self.config),
                authority=f"{self.config.authority_host}/{self.config.tenant_id}",
                http_client=self.http,
                instance_discovery=False,
                validate_authority=False,
            )
        return self._app

    def token(self) -> str:
        """A bearer token, from MSAL's cache or a fresh request; TokenError when none can be had."""
        with self._lock:
            try:
                result = self._application().acquire_token_for_client(scopes=self.scopes)
            except (requests.RequestException, OSError) as exc:
                self._fail("network", f"{type(exc).__name__} talking to the authority")
            except ValueError as exc:
                # MSAL raises ValueError for an unreachable discovery document or a bad key.
                self._app = None
                message = str(exc).splitlines()[0][:200]
                self._fail("network" if "authority" in message.lower() else "other", message)
            if "access_token" not in result:
                self._fail(*classify(result))
            now = self.clock.now()
            if result.get("token_source") == "identity_provider":
                self.metrics.last_token_success.set(now)
                self.metrics.token_expiry.set(now + float(result.get("expires_in", 0)))
                log.info("token acquired", extra=fields(expires_in=result.get("expires_in")))
            return str(result["access_token"])

    def invalidate(self) -> None:
        """Drop the cached token after Graph rejected it (401), so the next call asks anew."""
        with self._lock:
            if self._app is not None:
                self._app.remove_tokens_for_client()

    def _fail(self, reason: str, detail: str) -> NoReturn:
        self.metrics.token_failures.labels(reason).inc()
        log.warning("token request failed", extra=fields(reason=reason, detail=detail))
        raise TokenError(reason, detail)
