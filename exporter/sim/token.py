"""An app-only access token from the simulated tenant, without MSAL.

For callers that read the simulator's Graph API on their own: the pipeline benchmark's
baseline (fetch and parse, nothing else) and a test's stand-in for a vendor integration.
The collector itself always goes through :mod:`exporter.auth`.
"""

from __future__ import annotations

from typing import Protocol

import requests


class SimCredentials(Protocol):
    """Where a running simulator listens and the app registration it accepts."""

    @property
    def base_url(self) -> str: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def client_id(self) -> str: ...
    @property
    def client_secret(self) -> str: ...
    @property
    def ca_file(self) -> str: ...


def client_credentials_token(sim: SimCredentials, session: requests.Session | None = None) -> str:
    """The access token of a client-credentials grant against ``sim``'s token endpoint."""
    post = (session or requests).post
    response = post(
        f"{sim.base_url}/{sim.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
            "scope": f"{sim.base_url}/.default",
        },
        verify=sim.ca_file,
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])
