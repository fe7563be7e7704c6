"""The Helm chart, rendered offline by the real Helm SDK (helm-python-sdk, no binary).

Every `ci/*-values.yaml` scenario is linted strictly, rendered, validated against the
Kubernetes schemas kubernetes-validate ships, and its exporter config is handed to
`python -m exporter check-config`, so the chart can never render a config the exporter
rejects. The PrometheusRule and the dashboard are proved identical to the files under
grafana/ that promtool and Grafana provisioning test.
"""

from __future__ import annotations

import base64
import datetime
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml


def required_module(name: str, install: str) -> Any:
    """Import ``name``, or skip the chart tests without it; in CI a missing SDK fails them."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        if os.environ.get("CI"):
            raise RuntimeError(f"{name} is required in CI ({install}): {error}") from error
        pytest.skip(f"{install}", allow_module_level=True)


helm = required_module("helm_python", "pip install helm-python-sdk")
kubernetes_validate = required_module("kubernetes_validate", "pip install kubernetes-validate")

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "siem-exporter"
SCENARIOS = sorted(CHART.glob("ci/*-values.yaml"))
RELEASE = "audit"
NAMESPACE = "siem"
# The oldest Kubernetes the chart targets, and the newest kubernetes-validate ships.
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
STATE_DIR = "/var/lib/siem-exporter"
CONFIG_FILE = "/etc/siem-exporter/config.yaml"
SIDECAR_BEGIN = "# --- siem-exporter sidecar values: begin ---"
SIDECAR_END = "# --- siem-exporter sidecar values: end ---"


@dataclass
class Rendered:
    """One rendered release: its objects and its NOTES.txt."""

    objects: list[dict[str, Any]]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        matches = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
        return matches[0]

    def exporter_configmaps(self) -> list[dict[str, Any]]:
        return [c for c in self.of_kind("ConfigMap") if "config.yaml" in c.get("data", {})]

    def pods(self) -> list[dict[str, Any]]:
        """The exporter's pod specs: StatefulSet templates, or the sidecar snippet."""
        specs = [s["spec"]["template"]["spec"] for s in self.of_kind("StatefulSet")]
        snippet = self.sidecar_snippet()
        if snippet is not None:
            specs.append(
                {"containers": snippet["extraContainers"], "volumes": snippet["extraVolumes"]}
            )
        return specs

    def sidecar_snippet(self) -> dict[str, Any] | None:
        if SIDECAR_BEGIN not in self.notes:
            return None
        body = self.notes.split(SIDECAR_BEGIN, 1)[1].split(SIDECAR_END, 1)[0]
        snippet: dict[str, Any] = yaml.safe_load(body)
        return snippet


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def load_values(path: Path) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return values


def render(chart: Any, values: dict[str, Any]) -> Rendered:
    manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    objects: list[dict[str, Any]] = []
    notes = ""
    for template, text in manifests.items():
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Rendered(objects, notes)


@pytest.fixture(scope="module", params=SCENARIOS, ids=[p.name for p in SCENARIOS])
def scenario(request: pytest.FixtureRequest, chart: Any) -> tuple[dict[str, Any], Rendered]:
    values = load_values(request.param)
    return values, render(chart, values)


def exporter_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in pod["containers"] if c["name"].startswith("siem-exporter-")]


def volume_for_mount(pod: dict[str, Any], mount: dict[str, Any]) -> dict[str, Any]:
    matches = [v for v in pod.get("volumes", []) if v["name"] == mount["name"]]
    assert len(matches) == 1, f"volume {mount['name']} must be defined exactly once"
    return matches[0]


def test_there_are_the_five_scenarios_the_issue_names() -> None:
    names = {p.name.removesuffix("-values.yaml") for p in SCENARIOS}
    assert {"standalone", "sidecar", "workload-identity", "multi-tenant", "monitoring"} <= names


@pytest.mark.parametrize("path", [None, *SCENARIOS], ids=["defaults", *(p.name for p in SCENARIOS)])
def test_lint_strict_is_clean(path: Path | None) -> None:
    values = load_values(path) if path else None
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSIONS[0]}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_lint_reports_an_unknown_key_so_the_schema_is_strict() -> None:
    report = helm.lint(CHART, {"tenant": [{"name": "typo"}]}, strict=True)
    assert report["errors"] or any(m["severity"] >= 2 for m in report["messages"])


@pytest.mark.parametrize(
    "values",
    [
        {"tenants": [{"name": "contoso", "bogus": 1}]},
        {"config": {"client_secret": "must-not-live-in-config"}},
        {"tenants": [{"name": "c", "config": {"client_secret_file": "/x"}}]},
        {"tenants": [{"name": "Not_A_DNS_Label"}]},
        {"config": {"sinks": [{"host": "siem", "port": 514, "protocol": "smtp"}]}},
        {"mode": "sidecar", "tenants": [{"name": "a"}, {"name": "b"}]},
        {"config": {"sources": [{"name": "s", "sign_in_event_types": ["interactive"]}]}},
        {"config": {"sources": [{"name": "s"}]}},
        {"config": {"sources": [{"name": "s", "api": "management_activity", "content_type": "X"}]}},
        {"config": {"management_url": "http://manage.office.com"}},
    ],
    ids=[
        "tenant-key",
        "secret-in-config",
        "secret-file-in-config",
        "tenant-name",
        "protocol",
        "sidecar-two-tenants",
        "sign-in-event-type",
        "source-without-endpoint-or-types",
        "content-type",
        "management-url-not-https",
    ],
)
def test_schema_rejects(chart: Any, values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_core_objects_validate_against_kubernetes(
    scenario: tuple[dict[str, Any], Rendered], kube_version: str
) -> None:
    _, rendered = scenario
    assert rendered.objects
    for obj in rendered.objects:
        if obj["kind"] in CRD_KINDS:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        kubernetes_validate.validate(obj, kube_version, strict=True)
    snippet = rendered.sidecar_snippet()
    if snippet is not None:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "shipper"},
            "spec": {"containers": snippet["extraContainers"], "volumes": snippet["extraVolumes"]},
        }
        kubernetes_validate.validate(pod, kube_version, strict=True)


def test_every_object_carries_the_recommended_labels(
    scenario: tuple[dict[str, Any], Rendered],
) -> None:
    _, rendered = scenario
    for obj in rendered.objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "siem-exporter"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"].startswith("siem-exporter-")
        assert "app.kubernetes.io/version" in labels
        assert "app.kubernetes.io/component" in labels


def test_containers_are_hardened(scenario: tuple[dict[str, Any], Rendered]) -> None:
    _, rendered = scenario
    containers = [c for pod in rendered.pods() for c in exporter_containers(pod)]
    containers += [c for pod in rendered.of_kind("Pod") for c in pod["spec"]["containers"]]
    assert containers
    for container in containers:
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert isinstance(sc["runAsUser"], int) and sc["runAsUser"] > 0
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    for sts in rendered.of_kind("StatefulSet"):
        pod_sc = sts["spec"]["template"]["spec"]["securityContext"]
        assert pod_sc["runAsNonRoot"] is True
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert sts["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_probes_hit_healthz_and_readyz_on_the_configured_metrics_port(
    scenario: tuple[dict[str, Any], Rendered],
) -> None:
    _, rendered = scenario
    ports = {
        int(yaml.safe_load(c["data"]["config.yaml"])["metrics"]["listen"].rsplit(":", 1)[1])
        for c in rendered.exporter_configmaps()
    }
    for pod in rendered.pods():
        for container in exporter_containers(pod):
            named = {p["name"]: p["containerPort"] for p in container["ports"]}
            live = container["livenessProbe"]["httpGet"]
            ready = container["readinessProbe"]["httpGet"]
            assert live["path"] == "/healthz"
            assert ready["path"] == "/readyz"
            assert named[live["port"]] in ports
            assert named[ready["port"]] in ports


def test_config_state_and_tmp_are_mounted(scenario: tuple[dict[str, Any], Rendered]) -> None:
    _, rendered = scenario
    pvc_names = {p["metadata"]["name"] for p in rendered.of_kind("PersistentVolumeClaim")}
    for pod, owner in pods_with_owner(rendered):
        for container in exporter_containers(pod):
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert container["args"] == ["run", "--config", CONFIG_FILE]
            config_volume = volume_for_mount(pod, mounts[str(Path(CONFIG_FILE).parent)])
            config_map = rendered.named("ConfigMap", config_volume["configMap"]["name"])
            assert "config.yaml" in config_map["data"]
            state_path = yaml.safe_load(config_map["data"]["config.yaml"])["state"]["path"]
            assert Path(state_path).parent == Path(STATE_DIR)
            assert "emptyDir" in volume_for_mount(pod, mounts["/tmp"])
            state_mount = mounts[STATE_DIR]
            assert not state_mount.get("readOnly", False)
            if owner is not None:
                templates = owner["spec"]["volumeClaimTemplates"]
                assert [t["metadata"]["name"] for t in templates] == [state_mount["name"]]
                assert owner["spec"]["replicas"] == 1
            else:
                claim = volume_for_mount(pod, state_mount)["persistentVolumeClaim"]["claimName"]
                assert claim in pvc_names


def pods_with_owner(rendered: Rendered) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Each exporter pod spec with its StatefulSet, or None for the sidecar snippet."""
    owned = [(s["spec"]["template"]["spec"], s) for s in rendered.of_kind("StatefulSet")]
    snippet = rendered.sidecar_snippet()
    if snippet is not None:
        owned.append(
            ({"containers": snippet["extraContainers"], "volumes": snippet["extraVolumes"]}, None)
        )
    assert owned, "every scenario runs the exporter somewhere"
    return owned


def secret_values(values: dict[str, Any]) -> list[str]:
    """Every credential a values file carries, top-level and per tenant."""
    auths = [values.get("auth", {})] + [t.get("auth", {}) for t in values.get("tenants", [])]
    found = [a.get("clientSecret") for a in auths]
    found += [a.get("certificate", {}).get("privateKey") for a in auths]
    return [s for s in found if s]


def test_secrets_live_in_secrets_and_never_in_a_configmap(
    scenario: tuple[dict[str, Any], Rendered],
) -> None:
    values, rendered = scenario
    in_secrets = {
        base64.b64decode(v).decode() for s in rendered.of_kind("Secret") for v in s["data"].values()
    }
    configmaps = json.dumps([c["data"] for c in rendered.of_kind("ConfigMap")])
    for secret in secret_values(values):
        assert secret in in_secrets
        assert secret not in configmaps
        assert json.dumps(secret)[1:-1] not in configmaps
    for configmap in rendered.exporter_configmaps():
        config = yaml.safe_load(configmap["data"]["config.yaml"])
        assert "client_secret" not in config
        assert "private_key" not in json.dumps(config).replace("private_key_file", "")


def test_every_file_the_config_names_is_mounted_into_the_container(
    scenario: tuple[dict[str, Any], Rendered],
) -> None:
    _, rendered = scenario
    for pod, _owner in pods_with_owner(rendered):
        for container in exporter_containers(pod):
            config = container_config(rendered, pod, container)
            for key, path in file_paths(config):
                mount = mount_for(container, path)
                assert mount is not None, f"{key}: {path} is on no volume of {container['name']}"
                volume = volume_for_mount(pod, mount)
                if "secret" in volume:
                    items = {i["path"] for i in volume["secret"]["items"]}
                    assert str(Path(path).relative_to(mount["mountPath"])) in items


def container_config(
    rendered: Rendered, pod: dict[str, Any], container: dict[str, Any]
) -> dict[str, Any]:
    mount = mount_for(container, CONFIG_FILE)
    assert mount is not None
    name = volume_for_mount(pod, mount)["configMap"]["name"]
    config: dict[str, Any] = yaml.safe_load(
        rendered.named("ConfigMap", name)["data"]["config.yaml"]
    )
    return config


def file_paths(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, path) of every file the exporter reads at start-up."""
    paths = [(k, config[k]) for k in ("client_secret_file", "ca_bundle") if k in config]
    if "certificate" in config:
        paths.append(("certificate.private_key_file", config["certificate"]["private_key_file"]))
    paths += [
        (f"sinks[{i}].ca_file", s["ca_file"])
        for i, s in enumerate(config["sinks"])
        if "ca_file" in s
    ]
    return paths


def mount_for(container: dict[str, Any], path: str) -> dict[str, Any] | None:
    under = [m for m in container["volumeMounts"] if Path(path).is_relative_to(m["mountPath"])]
    return max(under, key=lambda m: len(m["mountPath"]), default=None)


def workload_identity_env(rendered: Rendered, token_file: Path) -> dict[str, str]:
    """What the Azure Workload Identity webhook injects, read off the service account."""
    accounts = rendered.of_kind("ServiceAccount")
    if not accounts:
        return {}
    annotations = accounts[0]["metadata"].get("annotations", {})
    env = {}
    if "azure.workload.identity/client-id" in annotations:
        env["AZURE_CLIENT_ID"] = annotations["azure.workload.identity/client-id"]
        env["AZURE_FEDERATED_TOKEN_FILE"] = str(token_file)
        env["AZURE_AUTHORITY_HOST"] = "https://login.microsoftonline.com/"
    if "azure.workload.identity/tenant-id" in annotations:
        env["AZURE_TENANT_ID"] = annotations["azure.workload.identity/tenant-id"]
    return env


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A real private key and CA certificate, so stand-in files parse like mounted ones."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return {
        "key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "cert": cert.public_bytes(serialization.Encoding.PEM),
    }


def stand_in(config: dict[str, Any], root: Path, pem: dict[str, bytes]) -> dict[str, Any]:
    """The config as the pod sees it, with each mounted file recreated under `root`."""
    contents = {
        "client_secret_file": b"stand-in-client-secret\n",
        "certificate.private_key_file": pem["key"],
        "ca_bundle": pem["cert"],
    }
    local = json.loads(json.dumps(config))
    for key, path in file_paths(config):
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(contents.get(key, pem["cert"]))
        if key == "certificate.private_key_file":
            local["certificate"]["private_key_file"] = str(target)
        elif key.startswith("sinks["):
            local["sinks"][int(key[6:].split("]")[0])]["ca_file"] = str(target)
        else:
            local[key] = str(target)
    local["state"]["path"] = str(root / local["state"]["path"].lstrip("/"))
    Path(local["state"]["path"]).parent.mkdir(parents=True, exist_ok=True)
    return local


def test_rendered_config_passes_check_config(
    scenario: tuple[dict[str, Any], Rendered],
    tmp_path: Path,
    pem_files: dict[str, bytes],
) -> None:
    _, rendered = scenario
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("stand-in.federated.token", encoding="utf-8")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env = {**base_env, **workload_identity_env(rendered, token_file), "PYTHONPATH": str(REPO)}
    configmaps = rendered.exporter_configmaps()
    assert configmaps
    for configmap in configmaps:
        root = tmp_path / configmap["metadata"]["name"]
        config = stand_in(yaml.safe_load(configmap["data"]["config.yaml"]), root, pem_files)
        config_file = root / "config.yaml"
        config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-m", "exporter", "check-config", "--config", str(config_file)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{configmap['metadata']['name']}: {result.stderr}"
        assert "stand-in-client-secret" not in result.stdout


def test_check_config_rejects_what_the_chart_must_not_render(tmp_path: Path, chart: Any) -> None:
    """Guards the test above: a broken rendered config really does fail check-config."""
    rendered = render(chart, load_values(CHART / "ci" / "standalone-values.yaml"))
    config = yaml.safe_load(rendered.exporter_configmaps()[0]["data"]["config.yaml"])
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", "--config", str(config_file)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "client_secret_file" in result.stderr


def test_one_statefulset_config_and_volume_per_tenant(chart: Any) -> None:
    values = load_values(CHART / "ci" / "multi-tenant-values.yaml")
    rendered = render(chart, values)
    tenants = [t["name"] for t in values["tenants"]]
    sets = rendered.of_kind("StatefulSet")
    assert sorted(s["metadata"]["name"] for s in sets) == sorted(
        f"{RELEASE}-siem-exporter-{t}" for t in tenants
    )
    selectors = [json.dumps(s["spec"]["selector"]["matchLabels"], sort_keys=True) for s in sets]
    assert len(set(selectors)) == len(tenants)
    configs = {
        s["metadata"]["name"]: container_config(
            rendered,
            s["spec"]["template"]["spec"],
            exporter_containers(s["spec"]["template"]["spec"])[0],
        )
        for s in sets
    }
    assert len({c["tenant_id"] for c in configs.values()}) == len(tenants)
    fabrikam = configs[f"{RELEASE}-siem-exporter-fabrikam"]
    assert [s["name"] for s in fabrikam["sources"]] == ["audits"]
    assert fabrikam["certificate"]["thumbprint"] == "0123456789ABCDEF0123456789ABCDEF01234567"
    northwind = configs[f"{RELEASE}-siem-exporter-northwind"]
    assert northwind["sinks"][0]["protocol"] == "udp"
    assert northwind["budget"] == {"requests": 3, "per": "10s"}
    contoso = rendered.named("StatefulSet", f"{RELEASE}-siem-exporter-contoso")
    volumes = contoso["spec"]["template"]["spec"]["volumes"]
    assert {"contoso-graph"} == {v["secret"]["secretName"] for v in volumes if "secret" in v}


def test_network_policy_allows_only_dns_https_sinks_and_metrics(chart: Any) -> None:
    rendered = render(chart, load_values(CHART / "ci" / "multi-tenant-values.yaml"))
    (policy,) = rendered.of_kind("NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert [p["port"] for r in spec["ingress"] for p in r["ports"]] == ["siem-metrics"]
    egress = {(p["protocol"], p["port"]) for r in spec["egress"] for p in r["ports"]}
    assert egress == {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 6514), ("UDP", 514)}


def test_workload_identity_needs_no_secret(chart: Any) -> None:
    rendered = render(chart, load_values(CHART / "ci" / "workload-identity-values.yaml"))
    assert rendered.of_kind("Secret") == []
    (account,) = rendered.of_kind("ServiceAccount")
    assert account["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert account["metadata"]["annotations"]["azure.workload.identity/client-id"]
    (sts,) = rendered.of_kind("StatefulSet")
    template = sts["spec"]["template"]
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert template["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert not [v for v in template["spec"]["volumes"] if "secret" in v]
    config = yaml.safe_load(rendered.exporter_configmaps()[0]["data"]["config.yaml"])
    assert config["workload_identity"] is True
    assert "tenant_id" not in config and "client_id" not in config


def test_sidecar_mode_renders_no_workload_and_sinks_to_localhost(chart: Any) -> None:
    rendered = render(chart, load_values(CHART / "ci" / "sidecar-values.yaml"))
    kinds = {o["kind"] for o in rendered.objects}
    assert kinds == {"ConfigMap", "PersistentVolumeClaim", "PodMonitor"}
    config = yaml.safe_load(rendered.exporter_configmaps()[0]["data"]["config.yaml"])
    assert config["sinks"][0]["host"] == "127.0.0.1"
    (monitor,) = rendered.of_kind("PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "fluent-bit"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


PARENT_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shipper
spec:
  replicas: 1
  selector:
    matchLabels: {app: shipper}
  template:
    metadata:
      labels: {app: shipper}
    spec:
      securityContext: {fsGroup: 10001}
      containers:
        - name: shipper
          image: fluent/fluent-bit:3.0
        {{- include "siem-exporter.sidecar.containers" (index .Subcharts "siem-exporter") | nindent 8 }}
      volumes:
        {{- include "siem-exporter.sidecar.volumes" (index .Subcharts "siem-exporter") | nindent 8 }}
"""


def test_named_sidecar_templates_work_from_a_parent_chart(tmp_path: Path) -> None:
    parent = tmp_path / "shipper"
    (parent / "templates").mkdir(parents=True)
    shutil.copytree(CHART, parent / "charts" / "siem-exporter")
    (parent / "Chart.yaml").write_text(
        "apiVersion: v2\nname: shipper\nversion: 0.1.0\n"
        "dependencies:\n  - name: siem-exporter\n    version: 0.1.0\n",
        encoding="utf-8",
    )
    (parent / "templates" / "deployment.yaml").write_text(PARENT_DEPLOYMENT, encoding="utf-8")
    sidecar = load_values(CHART / "ci" / "sidecar-values.yaml")
    with helm.Chart.load(parent) as loaded:
        rendered = render(loaded, {"siem-exporter": sidecar})
    with helm.Chart.load(CHART) as alone:
        snippet = render(alone, sidecar).sidecar_snippet()
    assert snippet is not None
    (deployment,) = rendered.of_kind("Deployment")
    for kube_version in KUBE_VERSIONS:
        kubernetes_validate.validate(deployment, kube_version, strict=True)
    pod = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["shipper", "siem-exporter-contoso"]
    assert pod["containers"][1:] == snippet["extraContainers"]
    assert pod["volumes"] == snippet["extraVolumes"]
    for mount in pod["containers"][1]["volumeMounts"]:
        volume_for_mount(pod, mount)
    configmap_names = {c["metadata"]["name"] for c in rendered.exporter_configmaps()}
    assert {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v} <= configmap_names


def test_monitoring_objects_are_off_by_default(chart: Any) -> None:
    values = load_values(CHART / "ci" / "standalone-values.yaml")
    kinds = {o["kind"] for o in render(chart, values).objects}
    assert not kinds & (CRD_KINDS | {"PodMonitor"})
    assert not [
        c
        for c in render(chart, values).of_kind("ConfigMap")
        if "grafana_dashboard" in c["metadata"]["labels"]
    ]


def test_the_metrics_service_keeps_not_ready_pods_scrapeable(chart: Any) -> None:
    """/readyz is 503 during a SIEM outage; the ServiceMonitor must still scrape then."""
    values = load_values(CHART / "ci" / "monitoring-values.yaml")
    services = render(chart, values).of_kind("Service")
    assert services
    assert all(s["spec"]["publishNotReadyAddresses"] is True for s in services)


def test_prometheus_rule_groups_are_the_plain_rules_file(chart: Any) -> None:
    original = REPO / "grafana" / "prometheus-rules.yaml"
    copy = CHART / "files" / "prometheus-rules.yaml"
    assert copy.read_bytes() == original.read_bytes(), "run: cp grafana/prometheus-rules.yaml " + (
        str(copy.relative_to(REPO))
    )
    rendered = render(chart, load_values(CHART / "ci" / "monitoring-values.yaml"))
    (rule,) = rendered.of_kind("PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(original.read_text(encoding="utf-8"))["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (monitor,) = rendered.of_kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    relabel = monitor["spec"]["endpoints"][0]["relabelings"][0]
    assert relabel["targetLabel"] == "job" and "siem-exporter" in relabel["replacement"]


def test_dashboard_configmap_is_the_grafana_dashboard(chart: Any) -> None:
    original = REPO / "grafana" / "dashboards" / "siem-exporter.json"
    copy = CHART / "files" / "siem-exporter.json"
    assert copy.read_bytes() == original.read_bytes(), "run: cp grafana/dashboards/" + (
        f"siem-exporter.json {copy.relative_to(REPO)}"
    )
    rendered = render(chart, load_values(CHART / "ci" / "monitoring-values.yaml"))
    (dashboard,) = [
        c
        for c in rendered.of_kind("ConfigMap")
        if c["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert dashboard["data"]["siem-exporter.json"] == original.read_text(encoding="utf-8")


def test_helm_test_hook_checks_readyz_of_every_shard(chart: Any) -> None:
    values = load_values(CHART / "ci" / "multi-tenant-values.yaml")
    rendered = render(chart, values)
    pods = rendered.of_kind("Pod")
    assert len(pods) == len(values["tenants"])
    service = rendered.of_kind("Service")[0]["metadata"]["name"]
    for pod, sts in zip(pods, rendered.of_kind("StatefulSet"), strict=True):
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        (container,) = pod["spec"]["containers"]
        port = container_config(
            rendered,
            sts["spec"]["template"]["spec"],
            exporter_containers(sts["spec"]["template"]["spec"])[0],
        )["metrics"]["listen"].rsplit(":", 1)[1]
        assert container["args"] == [f"http://{sts['metadata']['name']}-0.{service}:{port}/readyz"]
        assert sts["spec"]["serviceName"] == service


def test_the_schema_knows_every_key_the_exporter_declares() -> None:
    """The chart's schema is strict (unknown keys refused), so a key the exporter gains must
    reach it too, or no chart user could set it; and it must not allow a key the exporter
    would refuse."""
    from exporter.components import COMPONENTS
    from exporter.config import SCHEDULE_KEYS, SOURCE_NAME_KEYS

    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    source_keys = set(SOURCE_NAME_KEYS.names) | set(SCHEDULE_KEYS.names) | {"api"}
    for kind in COMPONENTS.sources.values():
        source_keys |= set(kind.keys.names)
    sink_keys = {"type", "name"}
    for kind in COMPONENTS.sinks.values():
        sink_keys |= set(kind.keys.names)
    assert set(schema["definitions"]["source"]["properties"]) == source_keys
    assert set(schema["definitions"]["sink"]["properties"]) == sink_keys


VERIFY_VALUES = CHART / "ci" / "verify-values.yaml"


def verify_pods(rendered: Rendered) -> dict[str, dict[str, Any]]:
    """Each verify CronJob's pod template, by tenant."""
    return {
        c["metadata"]["labels"]["siem-exporter.io/tenant"]: c["spec"]["jobTemplate"]["spec"][
            "template"
        ]
        for c in rendered.of_kind("CronJob")
    }


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_verify_renders_nothing_by_default(chart: Any) -> None:
    for path in SCENARIOS:
        if path != VERIFY_VALUES:
            rendered = render(chart, load_values(path))
            assert rendered.of_kind("CronJob") == [], path.name
            for configmap in rendered.exporter_configmaps():
                config = yaml.safe_load(configmap["data"]["config.yaml"])
                assert "verify_file" not in config["metrics"]


def test_verify_cronjob_runs_beside_each_collector_and_matches_none_of_its_selectors(
    chart: Any,
) -> None:
    rendered = render(chart, load_values(VERIFY_VALUES))
    pods = verify_pods(rendered)
    assert set(pods) == {"contoso", "fabrikam"}
    selectors = [s["spec"]["selector"]["matchLabels"] for s in rendered.of_kind("StatefulSet")]
    selectors += [s["spec"]["selector"] for s in rendered.of_kind("Service")]
    selectors += [
        p["spec"]["podSelector"]["matchLabels"] for p in rendered.of_kind("NetworkPolicy")
    ]
    selectors += [m["spec"]["selector"]["matchLabels"] for m in rendered.of_kind("PodMonitor")]
    assert len(selectors) == 5
    for tenant, pod in pods.items():
        statefulset = rendered.named("StatefulSet", f"{RELEASE}-siem-exporter-{tenant}")
        collector = statefulset["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert labels["siem-exporter.io/tenant"] == tenant
        assert not [s for s in selectors if selects(s, labels)], "a collector selector matches"
        # On the collector pod's node, mounting the StatefulSet's own claim.
        (term,) = pod["spec"]["affinity"]["podAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert selects(term["labelSelector"]["matchLabels"], collector["metadata"]["labels"])
        assert not [
            s
            for s in rendered.of_kind("StatefulSet")
            if s is not statefulset
            and selects(
                term["labelSelector"]["matchLabels"], s["spec"]["template"]["metadata"]["labels"]
            )
        ]
        claim = statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
        (state,) = [v for v in pod["spec"]["volumes"] if v["name"] == "siem-exporter-state"]
        assert state["persistentVolumeClaim"]["claimName"] == (
            f"{claim}-{statefulset['metadata']['name']}-0"
        )
        # The collector's hardening, config, credentials and tolerations.
        (container,) = pod["spec"]["containers"]
        (exporter,) = exporter_containers(collector["spec"])
        assert pod["spec"]["securityContext"] == collector["spec"]["securityContext"]
        assert container["securityContext"] == exporter["securityContext"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert pod["spec"]["restartPolicy"] == "Never"
        assert pod["spec"]["tolerations"] == collector["spec"]["tolerations"]
        for mount in exporter["volumeMounts"]:
            assert mount in container["volumeMounts"]
            if mount["name"] != "siem-exporter-state":  # the collector's: a claim template
                assert volume_for_mount(pod["spec"], mount) == volume_for_mount(
                    collector["spec"], mount
                )
        # What it writes is what the collector serves, on the state volume both mount.
        config = yaml.safe_load(
            rendered.named("ConfigMap", statefulset["metadata"]["name"])["data"]["config.yaml"]
        )
        script = container["command"][-1]
        assert f"--metrics-file {config['metrics']['verify_file']}" in script
        assert config["metrics"]["verify_file"].startswith(STATE_DIR + "/")
        assert f"--config {CONFIG_FILE} " in script
    (cronjob,) = [c for c in rendered.of_kind("CronJob") if "contoso" in c["metadata"]["name"]]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert cronjob["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0


FAKE_VERIFY = """#!/bin/sh
printf '%s\\n' "$@" > "$ARGS_FILE"
exit "$FAKE_STATUS"
"""


@pytest.mark.parametrize("status", [0, 1, 2])
def test_verify_job_audits_the_whole_utc_day_before_and_exits_as_verify(
    chart: Any, tmp_path: Path, status: int
) -> None:
    """The job's shell line, run here with a stand-in `siem-exporter` on PATH: yesterday's
    UTC midnight to today's, the options the values ask for, and verify's own exit status."""
    rendered = render(chart, load_values(VERIFY_VALUES))
    (container,) = verify_pods(rendered)["contoso"]["spec"]["containers"]
    assert container["command"][:2] == ["/bin/sh", "-ec"]
    (tmp_path / "siem-exporter").write_text(FAKE_VERIFY)
    (tmp_path / "siem-exporter").chmod(0o755)
    env = {
        "PATH": f"{tmp_path}:/usr/bin:/bin",
        "ARGS_FILE": str(tmp_path / "args"),
        "FAKE_STATUS": str(status),
    }
    for _ in range(3):  # a run across midnight UTC is tried again
        before = datetime.datetime.now(datetime.UTC).date()
        done = subprocess.run(container["command"], env=env, check=False)
        if datetime.datetime.now(datetime.UTC).date() == before:
            break
    assert done.returncode == status
    args = (tmp_path / "args").read_text().splitlines()
    yesterday = before - datetime.timedelta(days=1)
    assert args[:2] == ["verify", "--config"]
    assert args[args.index("--from") + 1] == f"{yesterday.isoformat()}T00:00:00Z"
    assert args[args.index("--to") + 1] == f"{before.isoformat()}T00:00:00Z"
    assert args[args.index("--metrics-file") + 1] == f"{STATE_DIR}/verify.prom"
    assert args[args.index("--budget-share") + 1] == "20%"
    assert args[args.index("--siem-export") + 1] == "/exports/siem-yesterday.jsonl"
    assert "--yes" in args and "--deliver-missing" not in args


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "sidecar"}, "needs mode standalone"),
        ({"persistence": {"enabled": False}}, "needs persistence.enabled"),
        ({"persistence": {"accessModes": ["ReadWriteOncePod"]}}, "ReadWriteOncePod"),
    ],
    ids=["sidecar", "no-persistence", "rwop"],
)
def test_verify_refuses_what_it_cannot_run_beside(
    chart: Any, change: dict[str, Any], message: str
) -> None:
    values = load_values(VERIFY_VALUES)
    values["tenants"] = values["tenants"][:1]
    values.update(change)
    with pytest.raises(Exception, match=message):
        render(chart, values)


@pytest.mark.parametrize(
    "verify",
    [
        {"siemExport": "/exports/$(rm -rf ~).jsonl"},
        {"siemExport": "relative.jsonl"},
        {"budgetShare": "20%; reboot"},
        {"daysAgo": 0},
        {"bogus": 1},
    ],
    ids=["export-shell", "export-relative", "share-shell", "days-ago-0", "unknown-key"],
)
def test_schema_rejects_verify_values_the_shell_line_cannot_hold(
    chart: Any, verify: dict[str, Any]
) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema({"verify": verify})
