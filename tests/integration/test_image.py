"""The container image, built by scripts/build-image and run the way the Helm chart runs it.

The chart's standalone scenario is rendered with the Helm SDK and its exporter container
is translated into `run` options for the local engine: the securityContext's user, read-only
root file system, dropped capabilities and no privilege escalation, and every volume it
mounts (the rendered ConfigMap and Secret as read-only files, emptyDir as tmpfs, the state
claim as a writable directory). Inside that container the image must show its help,
accept the rendered config with `check-config`, and run the demo to a clean end.

Without a Docker engine the engine is podman, with the image buildah built (vfs storage).
"Read-only" is then podman's `--read-only`: the container's root is mounted read-only,
as Kubernetes does for readOnlyRootFilesystem, and a probe proves writes fail with EROFS.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.sim.ca import write_test_pki

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "siem-exporter"
TAG = "siem-exporter:image-test"
# Nothing in the image needs a network beyond loopback (the demo's simulated tenant and
# SIEM run inside it), and no network spares podman the bridge and firewall set-up.
NETWORK = ["--network", "none"]

# ConfigMaps the standalone scenario mounts but expects the user to create.
USER_CONFIGMAPS = {"siem-ca": "ca.pem"}

# Where the probe writes: / itself is not writable by UID 10001 even when mounted
# read-write, so /var/tmp (mode 1777 in the image) shows whether the root file system is.
WRITE_PROBE = """
import os
for path in ("/var/tmp", "/etc/siem-exporter", "/var/lib/siem-exporter", "/tmp"):
    try:
        with open(os.path.join(path, "probe"), "w"):
            print(path, "writable")
    except OSError as error:
        print(path, error.strerror)
print("uid:gid", f"{os.getuid()}:{os.getgid()}")
"""


def require_tool(name: str) -> None:
    """Skip without ``name``; fail in CI, where .ci/run installs it."""
    if shutil.which(name) is None:
        if os.environ.get("CI"):
            pytest.fail(
                f"{name} is required in CI (apt-get install buildah podman mmdebstrap runc)"
            )
        pytest.skip(f"{name} not installed")


def container_engine() -> tuple[list[str], list[str]]:
    """The command that runs containers, and the `run` options this engine needs.

    scripts/build-image builds with Docker when an engine answers, so the image is there;
    otherwise buildah puts it in vfs storage, where podman finds it.
    """
    if shutil.which("docker"):
        answered = subprocess.run(["docker", "info"], capture_output=True, timeout=60)
        if answered.returncode == 0:
            return ["docker"], []
    for tool in ("buildah", "podman", "mmdebstrap", "runc"):
        require_tool(tool)
    # runc, because crun (podman's default here) refuses hosts with hybrid cgroups such as
    # CI's. Explicit limits, because podman's defaults raise them, which takes
    # CAP_SYS_RESOURCE, which CI's root lacks; lowering a limit needs no privilege.
    # --read-only-tmpfs=false: podman would otherwise mount tmpfs on /run, /tmp and
    # /var/tmp, which a pod does not get; the chart's own /tmp comes from its emptyDir.
    podman = ["podman", "--storage-driver", "vfs", "--runtime", "runc"]
    limits = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
    return podman, [*limits, "--read-only-tmpfs=false"]


def render_standalone() -> list[dict[str, Any]]:
    """The objects the chart renders for its standalone CI scenario."""
    try:
        import helm_python as helm
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("pip install helm-python-sdk")
    values = yaml.safe_load((CHART / "ci" / "standalone-values.yaml").read_text("utf-8"))
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=values, name="audit", namespace="siem")
    return [
        doc
        for template, text in manifests.items()
        if not template.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def stand_in_ca(workdir: Path) -> str:
    """A CA certificate that parses, for the ConfigMap the user would create."""
    return write_test_pki(workdir / "stand-in-ca").ca_file.read_text(encoding="ascii")


def write_files(directory: Path, files: dict[str, bytes], mode: int) -> Path:
    """A volume's files, world-readable like the kubelet's, for UID 10001 to read."""
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    for name, content in files.items():
        path = directory / name
        path.write_bytes(content)
        path.chmod(mode)
    return directory


def pod_run_options(objects: list[dict[str, Any]], workdir: Path) -> tuple[list[str], list[str]]:
    """`run` options that give a container what the chart's StatefulSet gives its pod.

    Returns the options and the container's args. Any volume kind the translation does not
    know fails the test, so a chart change cannot quietly drop a mount from it.
    """
    (statefulset,) = [o for o in objects if o["kind"] == "StatefulSet"]
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    configmaps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    secrets = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "Secret"}
    for name, key in USER_CONFIGMAPS.items():
        configmaps.setdefault(name, {key: stand_in_ca(workdir)})
    volumes = {v["name"]: v for v in pod["volumes"]}
    claims = {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]}

    context = container["securityContext"]
    assert context["capabilities"]["drop"] == ["ALL"]
    options = [
        "--user",
        f"{context['runAsUser']}:{context['runAsGroup']}",
        "--cap-drop",
        "ALL",
    ]
    if context["readOnlyRootFilesystem"]:
        options.append("--read-only")
    if not context["allowPrivilegeEscalation"]:
        options += ["--security-opt", "no-new-privileges"]
    for variable in container.get("env", []):
        options += ["--env", f"{variable['name']}={variable['value']}"]

    for mount in container["volumeMounts"]:
        name, target = mount["name"], mount["mountPath"]
        suffix = ":ro" if mount.get("readOnly") else ""
        volume = volumes.get(name, {})
        if name in claims:
            # The kubelet makes the claim writable for the pod's fsGroup.
            state = workdir / name
            state.mkdir()
            state.chmod(0o777)
            options += ["--volume", f"{state}:{target}{suffix}"]
        elif "emptyDir" in volume:
            options += ["--tmpfs", target]
        elif "configMap" in volume:
            data = configmaps[volume["configMap"]["name"]]
            files = {key: value.encode() for key, value in data.items()}
            source = write_files(workdir / name, files, 0o644)
            options += ["--volume", f"{source}:{target}{suffix}"]
        elif "secret" in volume:
            data = secrets[volume["secret"]["secretName"]]
            files = {i["path"]: base64.b64decode(data[i["key"]]) for i in volume["secret"]["items"]}
            source = write_files(workdir / name, files, volume["secret"]["defaultMode"])
            options += ["--volume", f"{source}:{target}{suffix}"]
        else:
            raise AssertionError(f"no translation for volume {name}: {volume}")
    return options, container["args"]


@pytest.mark.slow
def test_image_runs_as_the_chart_runs_it(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    engine, engine_options = container_engine()
    options, args = pod_run_options(render_standalone(), tmp_path)

    started = time.monotonic()
    build = subprocess.run(
        [str(REPO / "scripts" / "build-image"), TAG],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    size = int(re.findall(r"^image size: (\d+) bytes$", build.stdout, re.M)[-1])
    print(f"{TAG}: {size / 1e6:.1f} MB, built in {time.monotonic() - started:.0f} s")
    record_property("image_size_bytes", size)

    def run(*command: str, entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
        override = ["--entrypoint", entrypoint] if entrypoint else []
        return subprocess.run(
            [*engine, "run", "--rm", *engine_options, *NETWORK, *options, *override, TAG, *command],
            capture_output=True,
            text=True,
            timeout=300,
        )

    probe = run("-c", WRITE_PROBE, entrypoint="python3")
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.splitlines() == [
        "/var/tmp Read-only file system",
        "/etc/siem-exporter Read-only file system",
        "/var/lib/siem-exporter writable",
        "/tmp writable",
        "uid:gid 10001:10001",
    ]

    shown = run("--help")
    assert shown.returncode == 0, shown.stderr
    assert "check-config" in shown.stdout

    assert args[0] == "run"
    checked = run("check-config", *args[1:])
    assert checked.returncode == 0, checked.stdout + checked.stderr

    demo = run("demo", "--duration", "20")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "OK: nothing lost, nothing duplicated" in demo.stdout
