"""Tests of the strongroom Helm chart, run by scripts/test-chart (and so by
scripts/test): renders the chart with Helm's own engine (helm-python-sdk's
libhelm_c; no helm binary, nothing downloaded) for the default values and
for a cert-manager variant with the ServiceMonitor on; validates every
rendered core object against the Kubernetes schemas (kubernetes-validate)
and the Certificate and ServiceMonitor against the schemas in schemas/;
checks what the chart promises (spread, probes, pod security, hooks,
NetworkPolicy); scans the rendered YAML with checkov and requires the
failed checks to be exactly those README.md accepts.

Plain Python: `python tests/test_chart.py`; prints
`test result: ok. N passed; 0 failed` (or FAILED) and exits non-zero on
failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

CHART = Path(__file__).resolve().parent.parent
SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUBERNETES_VERSION = "1.33.0"
NAMESPACE = "strongroom"
RELEASE = "strongroom"

CUSTOM_SCHEMAS = {
    ("cert-manager.io/v1", "Certificate"): SCHEMAS / "certificate-cert-manager-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor-monitoring-coreos-v1.json",
}

DEFAULT = {}
CERT_MANAGER = {
    "platformOperators": ["spiffe://example.org/ops/admin"],
    "tls": {
        "certManager": {
            "enabled": True,
            "issuerRef": {"name": "internal-ca", "kind": "ClusterIssuer"},
            "dnsNames": ["strongroom.example.org"],
        }
    },
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "database": {"networkPolicy": {"cidrs": ["10.0.12.0/24"]}},
    "networkPolicy": {
        "grpcFrom": [{"namespaceSelector": {"matchLabels": {"strongroom-client": "true"}}}],
        "relayEgress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443, "protocol": "TCP"}]}],
    },
}


def render(values: dict) -> list[dict]:
    chart = helm.Chart.load(CHART)
    chart.validate_schema(values)
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str, component: str | None = None) -> dict:
    found = [
        o
        for o in by_kind(objects, kind)
        if component is None or o["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"expected one {kind} ({component}), found {len(found)}"
    return found[0]


def validate_all(objects: list[dict]) -> None:
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if key in CUSTOM_SCHEMAS:
            schema = json.loads(CUSTOM_SCHEMAS[key].read_text())
            jsonschema.validate(obj, schema)
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def accepted_findings() -> set[tuple[str, str]]:
    """The (check id, kind/name) pairs README.md accepts, from its table."""
    readme = (CHART / "README.md").read_text()
    section = readme.split("<!-- accepted-checkov:start -->")[1].split("<!-- accepted-checkov:end -->")[0]
    accepted = set()
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"CKV2?_K8S_\d+", cells[0]):
            for resource in cells[1].split(","):
                accepted.add((cells[0], resource.strip().strip("`")))
    return accepted


def checkov_failures(objects: list[dict]) -> set[tuple[str, str]]:
    checkov = Path(sys.executable).with_name("checkov")
    with tempfile.TemporaryDirectory() as tmp:
        for i, obj in enumerate(objects):
            Path(tmp, f"{i:02d}-{obj['kind'].lower()}.yaml").write_text(yaml.safe_dump(obj))
        run = subprocess.run(
            [str(checkov), "--directory", tmp, "--framework", "kubernetes", "--output", "json", "--quiet", "--compact"],
            capture_output=True,
            text=True,
            env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
            check=False,
        )
    report = json.loads(run.stdout) if run.stdout.strip() else {}
    if isinstance(report, list):
        report = next((r for r in report if r.get("check_type") == "kubernetes"), {})
    assert run.returncode in (0, 1), f"checkov failed to run: {run.stderr[-2000:]}"
    failed = set()
    for check in report.get("results", {}).get("failed_checks", []):
        # resource is "Kind.namespace.name"
        kind, _, name = check["resource"].split(".", 2)
        failed.add((check["check_id"], f"{kind}/{name}"))
    passed = report.get("summary", {}).get("passed", 0)
    assert passed > 0, f"checkov passed nothing: {run.stdout[-2000:]} {run.stderr[-2000:]}"
    return failed


# --- the tests -------------------------------------------------------------


def test_default_values_render_valid_objects():
    objects = render(DEFAULT)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["Deployment", "Job", "NetworkPolicy", "PodDisruptionBudget", "Service", "Service"], kinds
    validate_all(objects)
    assert not by_kind(objects, "Secret"), "the chart references Secrets, never creates them"
    assert all(o["metadata"]["namespace"] == NAMESPACE for o in objects)


def test_cert_manager_variant_renders_valid_objects():
    objects = render(CERT_MANAGER)
    kinds = sorted(o["kind"] for o in objects)
    assert "Certificate" in kinds and "ServiceMonitor" in kinds, kinds
    validate_all(objects)
    cert = one(objects, "Certificate")
    deployment = one(objects, "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == cert["spec"]["secretName"]
    assert cert["spec"]["issuerRef"] == {"name": "internal-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert f"{RELEASE}.{NAMESPACE}.svc" in cert["spec"]["dnsNames"]
    monitor = one(objects, "ServiceMonitor")
    metrics_service = next(s for s in by_kind(objects, "Service") if s["metadata"]["name"].endswith("-metrics"))
    for key, value in monitor["spec"]["selector"]["matchLabels"].items():
        assert metrics_service["metadata"]["labels"][key] == value
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_custom_resource_schemas_refuse_what_they_do_not_know():
    cert = one(render(CERT_MANAGER), "Certificate")
    cert["spec"]["privateKey"]["algorithm"] = "DSA"
    try:
        validate_all([cert])
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("an unknown key algorithm passed the Certificate schema")
    monitor = one(render(CERT_MANAGER), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    try:
        validate_all([monitor])
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("a misspelt field passed the ServiceMonitor schema")


def test_cert_manager_needs_an_issuer():
    try:
        render({"tls": {"certManager": {"enabled": True}}})
    except helm.HelmError as e:
        assert "issuerRef.name" in str(e), e
    else:
        raise AssertionError("cert-manager without an issuer rendered")


def test_values_schema_refuses_bad_values():
    chart = helm.Chart.load(CHART)
    for bad in [{"replicaCount": 1}, {"replicasCount": 3}, {"image": {"repository": "x", "digest": "latest"}}, {"extraEnv": [{"name": "PATH", "value": "/"}]}]:
        try:
            chart.validate_schema(bad)
        except helm.HelmValuesError:
            continue
        raise AssertionError(f"values.schema.json accepted {bad}")


def test_deployment_spreads_probes_and_locks_down_the_pod():
    objects = render(DEFAULT)
    deployment = one(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    pod = spec["template"]["spec"]
    spread = pod["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    env = {e["name"]: e for e in container["env"]}
    assert env["STRONGROOM_METRICS_LISTEN"]["value"] == "0.0.0.0:9090"
    assert env["STRONGROOM_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "strongroom-database", "key": "url"}
    assert "STRONGROOM_ROOT_KEY" not in env, "the root key is a mounted file, not an environment variable"
    assert env["STRONGROOM_ROOT_KEY_FILE"]["value"] == "/etc/strongroom/root-key/root.key"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["root-key"]["secret"]["secretName"] == "strongroom-root-key"
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == spec["selector"]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_migrations_are_a_hook_job_with_the_privileged_url():
    job = one(render(DEFAULT), "Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["migrate"]
    env = {e["name"]: e for e in container["env"]}
    assert env["STRONGROOM_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "strongroom-database-migrate"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False


def test_network_policy_admits_grpc_and_metrics_and_egress_to_dns_database_relay():
    objects = render(CERT_MANAGER)
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ingress_ports = sorted(p["port"] for rule in policy["ingress"] for p in rule["ports"])
    assert ingress_ports == ["grpc", "metrics"]
    assert policy["ingress"][0]["from"] == CERT_MANAGER["networkPolicy"]["grpcFrom"]
    # The metrics port: Prometheus by default, never anyone.
    assert policy["ingress"][1]["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
    egress = policy["egress"]
    assert {p["port"] for p in egress[0]["ports"]} == {53}
    assert egress[1] == {"to": [{"ipBlock": {"cidr": "10.0.12.0/24"}}], "ports": [{"port": 5432, "protocol": "TCP"}]}
    assert egress[2] == CERT_MANAGER["networkPolicy"]["relayEgress"][0]
    assert len(egress) == 3


def test_network_policy_without_metrics_peers_leaves_the_metrics_port_to_the_node():
    values = {"networkPolicy": {"metricsFrom": []}}
    policy = one(render(values), "NetworkPolicy")["spec"]
    ingress_ports = sorted(p["port"] for rule in policy["ingress"] for p in rule["ports"])
    assert ingress_ports == ["grpc"]


def test_checkov_failures_are_exactly_the_accepted_ones():
    accepted = accepted_findings()
    assert accepted, "README.md lists no accepted checkov findings"
    failed = checkov_failures(render(DEFAULT)) | checkov_failures(render(CERT_MANAGER))
    unexplained = failed - accepted
    stale = accepted - failed
    assert not unexplained, f"checkov failures not accepted in README.md: {sorted(unexplained)}"
    assert not stale, f"README.md accepts findings checkov no longer reports: {sorted(stale)}"


def main() -> int:
    tests = [(name, fn) for name, fn in sorted(globals().items()) if name.startswith("test_") and callable(fn)]
    passed = failed = 0
    for name, fn in tests:
        try:
            fn()
        except Exception:  # noqa: BLE001 - every failure is reported
            failed += 1
            print(f"test {name} ... FAILED")
            traceback.print_exc()
        else:
            passed += 1
            print(f"test {name} ... ok")
    status = "ok" if failed == 0 else "FAILED"
    print(f"test result: {status}. {passed} passed; {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
