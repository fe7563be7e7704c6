"""The four ways the app registration proves who it is, read from the config and shown masked.

A client secret (inline from ``${VAR}``, or from a file), a certificate (PEM private key
and SHA-1 thumbprint), or Azure Workload Identity (a federated token file the platform
rotates). Exactly one is given; secrets are :class:`~exporter.yamlconf.Secret`, so no
``repr``, log line or exception prints them, and check-config shows where they came from,
never what they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.errors import ConfigError
from exporter.yamlconf import Secret, Section, readable_file


@dataclass(frozen=True, slots=True)
class ClientSecretCredential:
    """An app registration's client secret, inline (from ``${VAR}``) or read from a file."""

    secret: Secret
    source: str  # "client_secret" or "client_secret_file: PATH", for check-config


@dataclass(frozen=True, slots=True)
class CertificateCredential:
    """A certificate credential: the PEM private key and the certificate's SHA-1 thumbprint."""

    private_key: Secret
    private_key_file: str
    thumbprint: str
    public_certificate: str | None


@dataclass(frozen=True, slots=True)
class WorkloadIdentityCredential:
    """Azure Workload Identity: a federated token re-read from this file for every request."""

    token_file: str


Credential = ClientSecretCredential | CertificateCredential | WorkloadIdentityCredential


def read_credential(
    top: Section, workload_identity: bool, environ: Mapping[str, str]
) -> Credential:
    """Exactly one of the four ways to authenticate."""
    given = [k for k in ("client_secret", "client_secret_file", "certificate") if top.has(k)]
    if workload_identity:
        given.append("workload_identity")
    if not given:
        raise ConfigError(
            "client_secret",
            "is required (or client_secret_file, certificate, or workload_identity: true)",
        )
    if len(given) > 1:
        raise ConfigError(given[1], f"conflicts with {given[0]}: give only one credential")
    kind = given[0]
    if kind == "client_secret":
        return ClientSecretCredential(Secret(top.text(kind, required=True)), kind)
    if kind == "client_secret_file":
        path, content = text_file(top, kind, required=True)
        secret = content.strip()
        if not secret:
            raise ConfigError(top.key(kind), f"{path} is empty")
        return ClientSecretCredential(Secret(secret), f"{kind}: {path}")
    if kind == "certificate":
        cert = Section(
            top.get(kind, dict),
            "certificate",
            ("private_key_file", "thumbprint", "public_certificate_file"),
        )
        key_file, private_key = text_file(cert, "private_key_file", required=True)
        thumbprint = cert.text("thumbprint", required=True).replace(":", "").strip()
        if not re.fullmatch(r"[0-9A-Fa-f]{40}", thumbprint):
            raise ConfigError(
                cert.key("thumbprint"), "expected the 40 hex digits of a SHA-1 thumbprint"
            )
        public_file = cert.text("public_certificate_file")
        return CertificateCredential(
            private_key=Secret(private_key),
            private_key_file=key_file,
            thumbprint=thumbprint.upper(),
            public_certificate=text_file(cert, "public_certificate_file", required=True)[1]
            if public_file is not None
            else None,
        )
    token_file = environ.get("AZURE_FEDERATED_TOKEN_FILE")
    if not token_file:
        raise ConfigError("workload_identity", "AZURE_FEDERATED_TOKEN_FILE is not set")
    return WorkloadIdentityCredential(token_file)


def text_file(section: Section, name: str, *, required: bool) -> tuple[str, str]:
    """The path and UTF-8 content of a file a key names; never echoes the content (a secret)."""
    path = readable_file(section, name, required=required)
    if path is None:
        raise ConfigError(section.key(name), "is required")
    try:
        return path, Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(section.key(name), f"cannot read {path!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(section.key(name), f"{path!r} is not UTF-8 text") from None


def show_credential(credential: Credential) -> dict[str, Any]:
    """The credential's keys as check-config prints them: paths and thumbprints, never secrets."""
    match credential:
        case ClientSecretCredential(source=source):
            key, _, path = source.partition(": ")
            return {key: path or "***"}
        case CertificateCredential(private_key_file=key_file, thumbprint=thumbprint):
            return {"certificate": {"private_key_file": key_file, "thumbprint": thumbprint}}
        case WorkloadIdentityCredential(token_file=token_file):
            return {"workload_identity": True, "federated_token_file": token_file}
