"""The HTTP service as peers nobody here wrote see it, which only Python has: Triton's own Python client
over the Open Inference Protocol, with and without API keys and a rate limit, an OpenAPI validator on
/openapi.json, and the autoscaler's manifest (deploy/k8s/hpa.yaml) read against /metrics. The service's
own behaviour is tested in tests/js/server-*.test.js."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.request

import numpy as np
import pytest
import tritonclient.http as triton
from openapi_spec_validator import validate
from tritonclient.utils import InferenceServerException

from choripan.imaging import load_batch
from choripan.photos import reference_photos
from choripan.predictor import Predictor

from .conftest import CAT_LABELS, ROOT

DEFAULT_PACKAGE = ROOT / "models" / "default.pt2"


def serve(**variables):
    """choripan's server on an ephemeral port, serving the default model under the name 'lite0'."""
    env = {**os.environ, "PORT": "0", "HOST": "127.0.0.1", "CHORIPAN_MODELS": f"lite0={DEFAULT_PACKAGE}", **variables}
    process = subprocess.Popen(
        ["node", str(ROOT / "js" / "server" / "main.js")], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    port = None
    for line in process.stdout:
        record = json.loads(line)
        if "port" in record:
            port = record["port"]
            break
    assert port, "the server did not listen"
    yield f"127.0.0.1:{port}"
    process.terminate()
    assert process.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def server():
    yield from serve()


INFER_KEY = "infer-key-for-the-python-client-0001"
ADMIN_KEY = "admin-key-for-the-python-client-0002"
LIMITED_KEY = "infer-key-with-a-small-budget-0003"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    """The same, asking for API keys, each with a bucket of 3 requests refilled at one a second."""
    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text(f"{INFER_KEY} infer\n{ADMIN_KEY} admin\n{LIMITED_KEY} infer\n")
    yield from serve(CHORIPAN_API_KEYS_FILE=str(keys), CHORIPAN_RATE_LIMIT="1:3")


@pytest.fixture(scope="module")
def client(server):
    return triton.InferenceServerClient(url=server)


@pytest.fixture(scope="module")
def reference():
    return Predictor(DEFAULT_PACKAGE)


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("lite0")
    metadata = client.get_model_metadata("lite0")
    assert {i["name"]: i["datatype"] for i in metadata["inputs"]} == {"image": "BYTES", "input": "FP32"}
    assert metadata["outputs"][0]["shape"] == [-1, 1000]
    assert client.get_server_metadata()["extensions"] == ["classification", "binary_tensor_data"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_encoded_images_as_bytes(client, reference, binary):
    photos = reference_photos()[:2]
    raw = [photo.read_bytes() for photo in photos]
    # In JSON, BYTES elements are strings: the images go base64-encoded; in binary, as they are.
    elements = raw if binary else [base64.b64encode(b) for b in raw]
    image = triton.InferInput("image", [len(raw)], "BYTES")
    image.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary)
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
    probabilities = client.infer("lite0", [image], outputs=outputs).as_numpy("probabilities")
    assert probabilities.shape == (2, 1000)
    for row, photo in zip(probabilities, photos, strict=True):
        np.testing.assert_allclose(row, reference.probabilities(photo).numpy(), atol=1e-5)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_preprocessed_fp32_with_classification(client, reference, binary):
    batch = load_batch(reference_photos()[:3], reference.preprocessing).numpy()
    tensor = triton.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    top = triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)
    result = client.infer("lite0", [tensor], outputs=[top]).as_numpy("probabilities")
    assert result.shape == (3, 3)
    first = [entry.decode() if isinstance(entry, bytes) else entry for entry in result[0]]
    probability, index, label = first[0].split(":", 2)
    assert label in CAT_LABELS and reference.labels[int(index)] == label and 0 < float(probability) <= 1
    assert result[1][0].decode().endswith(":espresso") if binary else result[1][0].endswith(":espresso")


def test_protocol_errors_have_the_protocol_shape(server):
    def post(body: bytes, path="/v2/models/lite0/infer", headers=None):
        request = urllib.request.Request(f"http://{server}{path}", data=body, method="POST", headers=headers or {})
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    lying = json.dumps(
        {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 99}}]}
    ).encode()
    cases = [
        (b"not json", {}, 400),
        (b'{"inputs": []}', {}, 400),
        (b'{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]}', {}, 400),
        (b'{"inputs": [{"name": "input", "shape": [1, 3, 5, 5], "datatype": "FP32", "data": [1]}]}', {}, 400),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [1]}]}', {}, 400),
        (lying, {"Inference-Header-Content-Length": str(len(lying))}, 400),  # 99 binary bytes promised, none sent
        (b'{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}]}', {}, 400),
    ]
    for body, headers, status in cases:
        answered, document = post(body, headers=headers)
        assert answered == status and isinstance(document["error"], str), (body, answered, document)
    assert post(b"{}", path="/v2/models/nope/infer")[0] == 404
    assert post(b"{}", path="/v2/models/lite0/versions/7/infer")[0] == 404


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def encoded_cat():
    image = triton.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([reference_photos()[0].read_bytes()], dtype=np.object_), binary_data=True)
    return [image]


def test_keys_the_client_sends_as_headers(keyed_server):
    client = triton.InferenceServerClient(url=keyed_server)
    # The probes need no key; the model's metadata and inference do.
    assert client.is_server_live() and client.is_server_ready()
    for headers, status in [({}, "401"), (bearer("a-key-this-server-never-gave"), "401")]:
        with pytest.raises(InferenceServerException) as refused:
            client.infer("lite0", encoded_cat(), headers=headers)
        assert refused.value.status() == status and "key" in refused.value.message()
        with pytest.raises(InferenceServerException) as refused:
            client.get_model_metadata("lite0", headers=headers)
        assert refused.value.status() == status
    for key in (INFER_KEY, ADMIN_KEY):
        assert client.get_model_metadata("lite0", headers=bearer(key))["name"] == "lite0"
        probabilities = client.infer("lite0", encoded_cat(), headers=bearer(key)).as_numpy("probabilities")
        assert probabilities.shape == (1, 1000)


def test_past_its_rate_a_key_is_refused_429_and_others_are_not(keyed_server):
    client = triton.InferenceServerClient(url=keyed_server)
    statuses = []
    for _ in range(4):
        try:
            client.get_model_metadata("lite0", headers=bearer(LIMITED_KEY))
            statuses.append("200")
        except InferenceServerException as error:
            statuses.append(error.status())
            assert "rate limit" in error.message()
    assert statuses == ["200", "200", "200", "429"]
    assert client.get_model_metadata("lite0", headers=bearer(INFER_KEY))["name"] == "lite0"
    request = urllib.request.Request(f"http://{keyed_server}/v2/models/lite0", headers=bearer(LIMITED_KEY))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    assert refused.value.code == 429 and refused.value.headers["Retry-After"] == "1"
    assert refused.value.headers["RateLimit"] == '"per-key";r=0;t=1'
    assert refused.value.headers["RateLimit-Policy"] == '"per-key";q=3;w=3'


def test_openapi_document_with_keys_and_limits_is_valid(keyed_server):
    request = urllib.request.Request(f"http://{keyed_server}/openapi.json", headers=bearer(ADMIN_KEY))
    with urllib.request.urlopen(request) as response:
        spec = json.loads(response.read())
    validate(spec)
    assert spec["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert {"401", "429"} <= set(spec["paths"]["/v2/models/{name}/infer"]["post"]["responses"])


def test_openapi_document_is_valid_and_lists_the_routes(server):
    with urllib.request.urlopen(f"http://{server}/openapi.json") as response:
        spec = json.loads(response.read())
    validate(spec)
    assert {"/predict", "/v2/models/{name}/infer", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])


def test_the_autoscaler_watches_a_metric_the_server_exports(server):
    import yaml

    hpa = yaml.safe_load((ROOT / "deploy" / "k8s" / "hpa.yaml").read_text())
    with urllib.request.urlopen(f"http://{server}/metrics") as response:
        exported = response.read().decode()
    for metric in hpa["spec"]["metrics"]:
        if metric["type"] == "Pods":
            assert f"\n{metric['pods']['metric']['name']}{{" in exported
