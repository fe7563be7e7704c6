"""A real rsyslogd on a loopback port, for tests that must prove what a SIEM receives.

The daemon runs in the foreground under its own config, work directory and pid file in a
temporary directory; it never touches the system rsyslog or /var/log. Every message it
receives is written as ``MSGID<TAB>MSG<LF>`` so tests can compare MSG byte for byte with
what was sent. rsyslog's own internal messages go to the default ruleset, which has no
action, so they never reach that file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pytest

from exporter.sim.ca import write_test_pki

HOST = "127.0.0.1"
_MAX_MESSAGE_SIZE = "512k"
_MAX_FRAME_SIZE = 600_000
_MODULE_DIRS = (
    "/usr/lib/x86_64-linux-gnu/rsyslog",
    "/usr/lib/aarch64-linux-gnu/rsyslog",
    "/usr/lib/rsyslog",
    "/usr/lib64/rsyslog",
)


def find_imrelp() -> None:
    """Skip a RELP test when rsyslog's imrelp module is absent, but fail it in CI."""
    if any(Path(d, "imrelp.so").exists() for d in _MODULE_DIRS):
        return
    if os.environ.get("CI"):
        pytest.fail("imrelp is required in CI (apt-get install rsyslog-relp)")
    pytest.skip("rsyslog's imrelp module not installed (rsyslog-relp)")


def find_rsyslogd() -> str:
    """Path of rsyslogd; skips the test when absent, but fails it in CI where it must exist."""
    found = shutil.which("rsyslogd") or (
        "/usr/sbin/rsyslogd" if os.access("/usr/sbin/rsyslogd", os.X_OK) else None
    )
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(
                "rsyslogd is required in CI (apt-get install rsyslog rsyslog-gnutls rsyslog-relp)"
            )
        pytest.skip("rsyslogd not installed")
    return found


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _udp_port_bound(port: int) -> bool:
    """Whether something is bound to 127.0.0.1:port for UDP (a datagram cannot probe it)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/udp", encoding="ascii") as table:
        return any(line.split()[1] == wanted for line in table.readlines()[1:])


class RsyslogReceiver:
    """Context manager around one rsyslogd listening on 127.0.0.1 (tcp, udp, relp; TLS).

    ``stop()`` and ``start()`` restart the daemon on the same port, for outage tests; the
    output file survives restarts, so ``messages()`` shows everything ever received.

    A RELP receiver runs its queue in direct mode: rsyslog then writes each message to
    the output file before imrelp answers ``200``, so an acknowledged message survives a
    SIGKILL of the daemon, which is what a RELP test must be able to rely on.
    """

    def __init__(
        self,
        *,
        protocol: str = "tcp",
        tls: bool = False,
        cert_hostnames: tuple[str, ...] = (HOST, "localhost"),
    ) -> None:
        if protocol not in ("tcp", "udp", "relp"):
            raise ValueError(f"protocol must be tcp, udp or relp, got {protocol!r}")
        if tls and protocol == "udp":
            raise ValueError("TLS needs protocol tcp or relp")
        if protocol == "relp":
            find_imrelp()
        self.protocol = protocol
        self.tls = tls
        self.host = HOST
        self.cert_hostnames = cert_hostnames
        self._binary = find_rsyslogd()
        self._dir = Path(tempfile.mkdtemp(prefix="rsyslog-test-"))
        self._output = self._dir / "received.log"
        self._pidfile = self._dir / "rsyslogd.pid"
        self._stderr = self._dir / "rsyslogd.stderr"
        self._port = _free_port(socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM)
        self._process: subprocess.Popen[bytes] | None = None
        self.ca_file: Path | None = None
        self._last_probe_error = ""
        self._config = self._dir / "rsyslog.conf"
        self._config.write_text(self._render_config(), encoding="utf-8")

    @property
    def port(self) -> int:
        """The loopback port the daemon listens on; stable across restarts."""
        return self._port

    def _render_config(self) -> str:
        global_params = [
            f'workDirectory="{self._dir}"',
            f'maxMessageSize="{_MAX_MESSAGE_SIZE}"',
            'parser.escape8BitCharactersOnReceive="off"',
            'net.enableDNS="off"',
        ]
        input_params = [f'address="{HOST}"', f'port="{self._port}"', 'ruleset="received"']
        extra: list[str] = []
        if self.protocol == "relp":
            # librelp's OpenSSL driver, as rsyslog's docs recommend; its GnuTLS driver
            # demands a client certificate whenever the listener has one of its own.
            module = (
                'module(load="imrelp" tls.tlslib="openssl")'
                if self.tls
                else 'module(load="imrelp")'
            )
            input_params.append(f'maxDataSize="{_MAX_FRAME_SIZE}"')
            if self.tls:
                pki = write_test_pki(self._dir / "pki", self.cert_hostnames)
                self.ca_file = pki.ca_file
                # No tls.caCert: with one, imrelp demands a client certificate, and the
                # collector authenticates the SIEM, not the other way round.
                input_params += [
                    'tls="on"',
                    f'tls.myCert="{pki.cert_file}"',
                    f'tls.myPrivKey="{pki.key_file}"',
                ]
            input_line = f'input(type="imrelp" {" ".join(input_params)})'
            extra.append('main_queue(queue.type="Direct")')
        elif self.protocol == "udp":
            module = 'module(load="imudp")'
            input_line = f'input(type="imudp" {" ".join(input_params)})'
        else:
            module_params = [f'MaxFrameSize="{_MAX_FRAME_SIZE}"']
            if self.tls:
                pki = write_test_pki(self._dir / "pki", self.cert_hostnames)
                self.ca_file = pki.ca_file
                global_params += [
                    'defaultNetstreamDriver="gtls"',
                    f'defaultNetstreamDriverCAFile="{pki.ca_file}"',
                    f'defaultNetstreamDriverCertFile="{pki.cert_file}"',
                    f'defaultNetstreamDriverKeyFile="{pki.key_file}"',
                ]
                module_params += [
                    'StreamDriver.Name="gtls"',
                    'StreamDriver.Mode="1"',
                    'StreamDriver.AuthMode="anon"',
                ]
            module = f'module(load="imtcp" {" ".join(module_params)})'
            input_line = f'input(type="imtcp" {" ".join(input_params)})'
        return "\n".join(
            [
                f"global({' '.join(global_params)})",
                *extra,
                module,
                'template(name="msgid_tab_msg" type="string" string="%msgid%\\t%msg%\\n")',
                'ruleset(name="received") {',
                f'  action(type="omfile" file="{self._output}" template="msgid_tab_msg")',
                "}",
                input_line,
                "",
            ]
        )

    def start(self, timeout: float = 15.0) -> None:
        """Start the daemon and return once its port accepts traffic."""
        if self._process is not None:
            raise RuntimeError("rsyslogd already running")
        with self._stderr.open("ab") as stderr:
            self._process = subprocess.Popen(
                [self._binary, "-n", "-f", str(self._config), "-i", str(self._pidfile)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        deadline = time.monotonic() + timeout
        while not self._listening():
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"rsyslogd exited at startup: {self._stderr.read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"rsyslogd not ready on {HOST}:{self._port}: {self._last_probe_error}"
                )
            time.sleep(0.05)

    def _listening(self) -> bool:
        """Whether the input is ready; for TLS that means a full, verified handshake works."""
        if self.protocol == "udp":
            return _udp_port_bound(self._port)
        try:
            with socket.create_connection((HOST, self._port), timeout=0.5) as probe:
                if self.tls:
                    context = ssl.create_default_context(cafile=self.ca_file)
                    # Handshake done means ready; rsyslog answers close_notify with a bare EOF.
                    name = self.cert_hostnames[0]
                    with (
                        context.wrap_socket(probe, server_hostname=name) as secure,
                        contextlib.suppress(OSError),
                    ):
                        secure.unwrap()
        except OSError as error:
            self._last_probe_error = f"{type(error).__name__}: {error}"
            return False
        return True

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL) and wait until it has exited."""
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL the daemon, as a crash would: no chance to flush, answer or close politely."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()

    def messages(self) -> list[tuple[str, str]]:
        """Every complete ``(msgid, msg)`` received so far, in arrival order."""
        try:
            data = self._output.read_bytes()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        received = []
        for line in data[:end].decode("utf-8", errors="replace").split("\n"):
            msgid, _, msg = line.partition("\t")
            received.append((msgid, msg))
        return received

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, str]]:
        """Messages once at least ``count`` arrived; fails the test with what did arrive."""
        deadline = time.monotonic() + timeout
        while True:
            received = self.messages()
            if len(received) >= count:
                return received
            if time.monotonic() > deadline:
                pytest.fail(f"rsyslogd received {len(received)} of {count} messages")
            time.sleep(0.05)

    def __enter__(self) -> RsyslogReceiver:
        try:
            self.start()
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
