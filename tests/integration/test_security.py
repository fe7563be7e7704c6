"""Secrets stay secret, TLS is always verified, and the listener binds only where told.

Each test runs the real processes and then scans every byte they printed (stdout,
stderr), served (/metrics, /healthz, /readyz) or sent to the SIEM for the client secret,
the certificate's private key and every bearer token the simulator issued (read back
from ``/_sim/tokens``, before and after a forced token refresh).
"""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry

from exporter.budget import RequestBudget
from exporter.clock import RealClock
from exporter.config import SourceConfig
from exporter.errors import GraphHTTPError
from exporter.graph import GraphClient
from exporter.graph_query import GraphSettings
from exporter.https import VerifiedSession
from exporter.metrics import ExporterMetrics
from exporter.sim.ca import write_test_pki
from tests.rsyslog import RsyslogReceiver
from tests.stack import (
    ConnectionRecorder,
    SimProcess,
    collector_config,
    free_port,
    metric_value,
    secret_env,
    start_collector,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
PROBE_PATHS = ("/metrics", "/healthz", "/readyz", "/", "/metrics?name[]=x", "/../../etc/passwd")
# secrets.token_urlsafe(48), the simulator's token format, standing on its own.
TOKEN_SHAPE = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{64}(?![A-Za-z0-9_-])")


def sim_tokens(base_url: str, ca_file: str) -> set[str]:
    response = requests.get(f"{base_url}/_sim/tokens", verify=ca_file, timeout=30)
    response.raise_for_status()
    return set(response.json())


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 (False while the listener is not up yet)."""
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def served(base_url: str) -> str:
    """Everything the metrics listener answers on a few paths, legitimate or not."""
    bodies = []
    for path in PROBE_PATHS:
        response = requests.get(f"{base_url}{path}", timeout=10)
        bodies.append(f"{path} {response.status_code} {dict(response.headers)}\n{response.text}")
    return "\n".join(bodies)


def check_config(config_path: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def assert_nothing_leaks(secrets: Iterable[str], outputs: dict[str, str]) -> None:
    secrets = [s for s in secrets if s]
    assert secrets, "nothing to look for: the test would prove nothing"
    for where, text in outputs.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:4]}...) appears in {where}"


def force_token_refresh(sim: SimProcess, collector_tokens: set[str]) -> set[str]:
    """Revoke every token (the next Graph call gets 401) and fail one token request first."""
    issued = sim.stats()["tokens_issued"]
    sim.set_faults(revoke_tokens=True, token_failures=1)
    wait_until(lambda: sim.stats()["tokens_issued"] > issued, timeout=60)
    return collector_tokens | sim_tokens(sim.base_url, sim.ca_file)


def listening_addresses(port: int) -> set[str]:
    """The local IPv4 addresses with a TCP socket listening on ``port`` (from /proc)."""
    found = set()
    with open("/proc/net/tcp", encoding="ascii") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return True
    return False


def test_client_secret_and_tokens_never_appear_and_metrics_bind_where_configured(
    sim: SimProcess, tmp_path: Path
) -> None:
    metrics_port = free_port()
    with RsyslogReceiver() as receiver:
        config = collector_config(
            sim, tmp_path, syslog_port=receiver.port, metrics_port=metrics_port, lookback="3m"
        )
        del config["client_secret_file"]
        config["client_secret"] = "${GRAPH_CLIENT_SECRET}"
        config["metrics"]["listen"] = f"127.0.0.2:{metrics_port}"
        config["log_level"] = "debug"
        with start_collector(config, tmp_path, env=secret_env(sim)) as collector:
            base = f"http://127.0.0.2:{metrics_port}"
            wait_until(lambda: answers(f"{base}/readyz"), timeout=60)
            tokens = force_token_refresh(sim, sim_tokens(sim.base_url, sim.ca_file))
            wait_until(
                lambda: (
                    metric_value(
                        requests.get(f"{base}/metrics", timeout=5).text,
                        "siem_exporter_token_failures_total",
                        reason="invalid_client",
                    )
                    >= 1
                ),
                timeout=60,
            )
            wait_until(lambda: answers(f"{base}/readyz"), timeout=60)
            outputs = {"metrics listener": served(base)}
            assert listening_addresses(metrics_port) == {"127.0.0.2"}
            assert refused("127.0.0.1", metrics_port), "the listener answers on 127.0.0.1 too"
            assert collector.terminate() == 0
        outputs["collector stdout and stderr"] = collector.logs()
        outputs["check-config"] = check_config(tmp_path / "config.yaml", secret_env(sim))
        outputs["the SIEM"] = "\n".join(msg for _, msg in receiver.messages())
    assert len(tokens) >= 2, "the refresh did not happen: only one token to look for"
    assert_nothing_leaks([sim.client_secret, *tokens], outputs)
    assert "AADSTS7000215" in outputs["collector stdout and stderr"], "the failure went unlogged"
    private = {
        str(event[field])
        for event in map(json.loads, outputs["the SIEM"].splitlines())
        for field in ("id", "userPrincipalName", "userId", "ipAddress", "correlationId")
        if event.get(field)
    }
    assert private, "no delivered events to look for"
    served_text = outputs["metrics listener"]
    assert [value for value in private if value in served_text] == []


def write_certificate(directory: Path) -> tuple[Path, str, bytes]:
    """A throwaway RSA key and self-signed certificate: (key file, SHA-1 thumbprint, key PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "siem-exporter-test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_file = directory / "graph-key.pem"
    key_file.write_bytes(pem)
    return key_file, certificate.fingerprint(hashes.SHA1()).hex().upper(), pem


def test_certificate_private_key_and_tokens_never_appear(sim: SimProcess, tmp_path: Path) -> None:
    key_file, thumbprint, pem = write_certificate(tmp_path)
    key_lines = [line for line in pem.decode().splitlines() if "-----" not in line]
    metrics_port = free_port()
    with RsyslogReceiver() as receiver:
        config = collector_config(
            sim, tmp_path, syslog_port=receiver.port, metrics_port=metrics_port, lookback="3m"
        )
        del config["client_secret_file"]
        config["certificate"] = {"private_key_file": str(key_file), "thumbprint": thumbprint}
        config["log_level"] = "debug"
        with start_collector(config, tmp_path) as collector:
            collector.wait_ready()
            assert sim.stats()["tokens_issued"] >= 1
            tokens = force_token_refresh(sim, sim_tokens(sim.base_url, sim.ca_file))
            collector.wait_ready()
            outputs = {"metrics listener": served(collector.base_url)}
            assert listening_addresses(metrics_port) == {"127.0.0.1"}
            assert refused("127.0.0.2", metrics_port), "the listener answers on 127.0.0.2 too"
            assert collector.terminate() == 0
        outputs["collector stdout and stderr"] = collector.logs()
        outputs["check-config"] = check_config(tmp_path / "config.yaml")
        outputs["the SIEM"] = "\n".join(msg for _, msg in receiver.messages())
    assert "PRIVATE KEY" not in "".join(outputs.values())
    assert_nothing_leaks([*key_lines, *tokens, sim.client_secret], outputs)


def demo_tokens(stdout: list[str], found: set[str]) -> None:
    """Collect the demo tenant's tokens while it runs; its CA is in the demo's temp dir."""
    base_url = None
    while base_url is None:
        match = re.search(r"simulated tenant\s+(https://\S+)", "".join(stdout))
        base_url = match.group(1) if match else None
        time.sleep(0.2)
    candidates = glob.glob(os.path.join(tempfile.gettempdir(), "siem-exporter-demo-*", "ca.pem"))
    for _ in range(40):
        for ca_file in candidates:
            try:
                found.update(sim_tokens(base_url, ca_file))
            except (requests.RequestException, OSError):
                continue
        time.sleep(0.5)


def test_the_demo_prints_and_serves_no_secret_or_token() -> None:
    metrics_port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "demo",
            "--duration",
            "15",
            "--metrics-listen",
            f"127.0.0.1:{metrics_port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    stdout: list[str] = []
    stderr: list[str] = []
    tokens: set[str] = set()
    readers = [
        threading.Thread(target=lambda: stdout.extend(process.stdout), daemon=True),  # type: ignore[arg-type]
        threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True),  # type: ignore[arg-type]
    ]
    for reader in readers:
        reader.start()
    outputs: dict[str, Any] = {}
    try:
        wait_until(lambda: "] delivered" in "".join(stdout), timeout=120)
        demo_tokens(stdout, tokens)
        outputs["metrics listener"] = served(f"http://127.0.0.1:{metrics_port}")
        assert process.wait(timeout=180) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    for reader in readers:
        reader.join(timeout=10)
    outputs["demo stdout"] = "".join(stdout)
    outputs["demo stderr"] = "".join(stderr)
    assert tokens, "could not read the demo tenant's tokens: the scan would prove nothing"
    assert_nothing_leaks(tokens, outputs)
    for where, text in outputs.items():
        assert "sim~" not in text, f"the demo's client secret appears in {where}"
        assert not TOKEN_SHAPE.search(text), f"something shaped like a bearer token in {where}"


def test_tls_is_verified_even_when_the_environment_trusts_the_simulator(
    sim: SimProcess, tmp_path: Path
) -> None:
    """No ca_bundle: the simulator's certificate is not trusted, whatever the environment says."""
    with RsyslogReceiver() as receiver:
        config = collector_config(
            sim, tmp_path, syslog_port=receiver.port, metrics_port=free_port(), lookback="3m"
        )
        del config["ca_bundle"]
        trusting_env = {
            "REQUESTS_CA_BUNDLE": sim.ca_file,
            "CURL_CA_BUNDLE": sim.ca_file,
            "SSL_CERT_FILE": sim.ca_file,
        }
        with start_collector(config, tmp_path, env=trusting_env) as collector:

            def network_failures() -> float:
                response = collector.get("/metrics")
                if response is None:
                    return 0.0
                return metric_value(
                    response.text, "siem_exporter_token_failures_total", reason="network"
                )

            wait_until(lambda: network_failures() >= 2, timeout=90)
            assert collector.get("/readyz").status_code == 503
            assert collector.process.poll() is None
            assert collector.terminate() == 0
        time.sleep(0.5)
        assert receiver.messages() == [], "events were sent without a verified token"
    stats = sim.stats()
    assert stats["tokens_issued"] == 0, "a token was issued over an unverified connection"
    assert "signins" not in stats["requests"] and "directoryAudits" not in stats["requests"]
    assert "certificate verify failed" in collector.logs().lower() or "SSL" in collector.logs()


def test_http_is_refused_in_config_and_in_next_links(sim: SimProcess, tmp_path: Path) -> None:
    for key in ("graph_url", "authority_host"):
        plain = yaml.safe_load(
            yaml.safe_dump(collector_config(sim, tmp_path, syslog_port=514, metrics_port=1))
        )
        plain[key] = sim.base_url.replace("https://", "http://")
        path = tmp_path / f"plain-{key}.yaml"
        path.write_text(yaml.safe_dump(plain), encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-m", "exporter", "run", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert result.returncode == 2 and f"{key}: expected an https:// URL" in result.stderr

    recorder = ConnectionRecorder()
    try:
        with RsyslogReceiver() as receiver:
            config = collector_config(
                sim,
                tmp_path,
                syslog_port=receiver.port,
                metrics_port=free_port(),
                sources=("signins",),
            )
            with start_collector(config, tmp_path) as collector:
                collector.wait_ready()
                sim.set_faults(
                    foreign_next_link=2, foreign_next_link_url=f"http://127.0.0.1:{recorder.port}"
                )
                wait_until(
                    lambda: (
                        collector.metric(
                            "siem_exporter_api_errors_total",
                            source="signins",
                            reason="foreign_next_link",
                        )
                        >= 2
                    ),
                    timeout=60,
                )
                assert collector.terminate() == 0
    finally:
        recorder.close()
    assert recorder.received == [], "the collector followed a nextLink over plain http"


class RedirectingGraph:
    """An HTTPS server that answers every request with a redirect to ``target``."""

    def __init__(self, directory: Path, target: str) -> None:
        pki = write_test_pki(directory)
        self.ca_file = str(pki.ca_file)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.cert_file, pki.key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FixedToken:
    """Stands in for MSAL: the bearer token whose travels the test follows."""

    def token(self) -> str:
        return "bearer-that-must-stay-home"

    def invalidate(self) -> None:
        return


def test_a_redirect_from_graph_is_refused_and_never_followed(tmp_path: Path) -> None:
    recorder = ConnectionRecorder()
    graph = RedirectingGraph(tmp_path / "pki", f"http://127.0.0.1:{recorder.port}/steal")
    try:
        clock = RealClock()
        metrics = ExporterMetrics(CollectorRegistry())
        source = SourceConfig(
            "signins",
            "graph",
            GraphSettings("/v1.0/auditLogs/signIns", "createdDateTime"),
            page_size=10,
            poll_interval=60.0,
            lookback=120.0,
            max_lookback=3600.0,
        )
        client = GraphClient(
            graph.url,
            source,
            FixedToken(),
            RequestBudget(100, 1.0, clock),
            metrics,
            clock,
            VerifiedSession(graph.ca_file),
        )
        with pytest.raises(GraphHTTPError) as refused_with:
            next(client.pages(time.time() - 60))
        assert refused_with.value.status == 302
        time.sleep(0.5)
    finally:
        graph.close()
        recorder.close()
    assert recorder.received == [], "the redirect was followed"
