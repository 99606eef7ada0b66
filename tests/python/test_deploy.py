"""The container and the Kubernetes manifests, checked as far as a machine that cannot pull images can:
hadolint on the Dockerfile, the Kubernetes schemas on deploy/k8s, and what each file promises the others.
(tests/js/bundle.test.js runs the bundle step that the Dockerfile's builder runs.)"""

from __future__ import annotations

import copy
import gzip
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .conftest import ROOT

K8S = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))


def manifest(name: str) -> dict:
    return yaml.safe_load((ROOT / "deploy" / name).read_text())


def test_hadolint_passes():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([hadolint, ROOT / "Dockerfile"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_builds_the_bundle_and_runs_it_as_a_non_root_server():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) == 2, "a builder stage and a runtime stage"
    builder, runtime = stages
    assert "npm ci" in builder and "npm run bundle -- --out /dist" in builder
    assert runtime.startswith("node:") and "slim" in runtime.split()[0]
    assert "COPY --from=builder" in runtime and "/dist/choripan" in runtime
    for line in ("USER 1000:1000", "HOST=0.0.0.0", "EXPOSE 8080", "STOPSIGNAL SIGTERM", 'CMD ["/opt/choripan/serve"]'):
        assert line in runtime, line
    assert "HEALTHCHECK" in runtime and "/healthz" in runtime
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "node_modules", "build", "models"} <= set(ignored)


@pytest.mark.parametrize("path", K8S, ids=[p.name for p in K8S])
def test_kubernetes_manifests_validate(path):
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, "1.30", strict=True)


def test_probes_drain_and_autoscaling_fit_the_server():
    deployment = manifest("k8s/deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    server_drain = 10  # js/server/main.js: ten seconds, then it stops anyway
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + server_drain
    assert container["resources"]["limits"]["cpu"] == container["resources"]["requests"]["cpu"]

    hpa = manifest("k8s/hpa.yaml")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (deployment["kind"], deployment["metadata"]["name"])
    pods_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods_metrics == ["choripan_queue_depth"]
    rules = yaml.safe_load(manifest("k8s/prometheus-adapter.yaml")["data"]["config.yaml"])["rules"]
    assert any(rule["name"]["as"] == pods_metrics[0] for rule in rules)
    service = manifest("k8s/service.yaml")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # The gRPC port the server is told (CHORIPAN_GRPC_PORT) is the one declared, and the Service routes to it.
    env = {variable["name"]: variable["value"] for variable in container["env"]}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert int(env["CHORIPAN_GRPC_PORT"]) == ports["grpc"] and int(env["PORT"]) == ports["http"]
    assert {port["targetPort"] for port in service["spec"]["ports"]} == {"http", "grpc"}
    budget = manifest("k8s/pdb.yaml")
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_api_keys_come_from_a_secret_the_server_user_can_read():
    pod = manifest("k8s/deployment.yaml")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    keys_file = next(e["value"] for e in container["env"] if e["name"] == "CHORIPAN_API_KEYS_FILE")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next(m for m in container["volumeMounts"] if keys_file.startswith(m["mountPath"] + "/"))
    secret = volumes[mount["name"]]["secret"]
    assert mount["readOnly"] and secret["secretName"] == "choripan-api-keys"
    # Group-readable, and the group is the server's: fsGroup owns the Secret's files.
    assert secret["defaultMode"] & 0o040 and not secret["defaultMode"] & 0o007
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_kserve_serves_choripan_with_the_open_inference_protocol():
    service = manifest("kserve/inferenceservice.yaml")
    runtime = manifest("kserve/servingruntime.yaml")
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    model = service["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "v2" and model["runtime"] == runtime["metadata"]["name"]
    assert (runtime["apiVersion"], runtime["kind"]) == ("serving.kserve.io/v1alpha1", "ServingRuntime")
    assert "v2" in runtime["spec"]["protocolVersions"]
    assert model["modelFormat"]["name"] in [f["name"] for f in runtime["spec"]["supportedModelFormats"]]
    assert runtime["spec"]["containers"][0]["ports"][0]["containerPort"] == 8080


def crd_schema(plural: str, version: str) -> dict:
    """The openAPIV3Schema of one version of KServe's published CRD (tests/python/kserve/README.md)."""
    crd = yaml.safe_load(
        gzip.decompress((Path(__file__).parent / "kserve" / f"serving.kserve.io_{plural}.yaml.gz").read_bytes())
    )
    served = {entry["name"]: entry for entry in crd["spec"]["versions"]}
    assert served[version]["served"], f"{plural} {version} is not served"
    return served[version]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize(
    ("name", "plural"),
    [("kserve/inferenceservice.yaml", "inferenceservices"), ("kserve/servingruntime.yaml", "servingruntimes")],
)
def test_kserve_manifests_validate_against_kserves_crds(name, plural):
    document = manifest(name)
    schema = crd_schema(plural, document["apiVersion"].split("/")[1])
    jsonschema.validate(document, schema)
    # The schema has teeth: a misspelled field's type, or a missing required one, is refused.
    broken = copy.deepcopy(document)
    if plural == "inferenceservices":
        broken["spec"]["predictor"]["minReplicas"] = "one"
    else:
        del broken["spec"]["containers"][0]["name"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
