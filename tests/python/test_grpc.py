"""The Open Inference Protocol over gRPC (CHORIPAN_GRPC_PORT) as Triton's own gRPC client sees it: the
same answers, errors, limits and metrics as over HTTP, and a call in hand finished on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import threading
import time
import urllib.request
from http.client import HTTPConnection
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from choripan.imaging import load_batch
from choripan.photos import data_dir, reference_photos
from choripan.predictor import Predictor

from .conftest import CAT_LABELS, ROOT

DEFAULT_PACKAGE = ROOT / "models" / "default.pt2"
MAX_BYTES = 4 * 1024 * 1024


def start(**variables):
    """`choripan serve` on ephemeral loopback ports, HTTP and gRPC; (process, http address, grpc address)."""
    env = {
        **os.environ,
        "PORT": "0",
        "CHORIPAN_GRPC_PORT": "0",
        "HOST": "127.0.0.1",
        "CHORIPAN_MODELS": f"lite0={DEFAULT_PACKAGE}",
        **variables,
    }
    process = subprocess.Popen(
        ["node", str(ROOT / "bin" / "choripan.js"), "serve"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    for line in process.stdout:
        record = json.loads(line)
        if "port" in record:
            return process, f"127.0.0.1:{record['port']}", f"127.0.0.1:{record['grpcPort']}"
    raise AssertionError("the server did not listen")


@pytest.fixture(scope="module")
def server():
    process, http, grpc = start(CHORIPAN_MAX_BYTES=str(MAX_BYTES))
    yield http, grpc
    process.terminate()
    assert process.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def client(server):
    return triton.InferenceServerClient(url=server[1])


@pytest.fixture(scope="module")
def reference():
    return Predictor(DEFAULT_PACKAGE)


def images(paths):
    raw = [path.read_bytes() for path in paths]
    tensor = triton.InferInput("image", [len(raw)], "BYTES")
    tensor.set_data_from_numpy(np.array(raw, dtype=np.object_))
    return tensor


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("lite0")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "choripan" and server["extensions"] == ["classification", "binary_tensor_data"]
    metadata = client.get_model_metadata("lite0", as_json=True)
    assert {i["name"]: i["datatype"] for i in metadata["inputs"]} == {"image": "BYTES", "input": "FP32"}
    assert metadata["outputs"][0]["shape"] == ["-1", "1000"] and metadata["versions"] == ["1"]


def test_a_photo_as_bytes(client, reference):
    photo = data_dir() / "chelsea.png"  # scikit-image's cat
    result = client.infer("lite0", [images([photo])], request_id="cat-1")
    assert result.get_response().id == "cat-1"
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (1, 1000)
    np.testing.assert_allclose(probabilities[0], reference.probabilities(photo).numpy(), atol=1e-5)
    assert reference.labels[int(probabilities[0].argmax())] in CAT_LABELS


def test_a_preprocessed_fp32_tensor_with_classification(client, reference):
    batch = load_batch(reference_photos()[:3], reference.preprocessing).numpy()
    tensor = triton.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    top = triton.InferRequestedOutput("probabilities", class_count=3)
    result = client.infer("lite0", [tensor], outputs=[top]).as_numpy("probabilities")
    assert result.shape == (3, 3)
    probability, index, label = result[0][0].decode().split(":", 2)
    assert label in CAT_LABELS and reference.labels[int(index)] == label and 0 < float(probability) <= 1
    assert result[1][0].decode().endswith(":espresso")


def status_of(call):
    with pytest.raises(InferenceServerException) as raised:
        call()
    return raised.value.status(), raised.value.message()


def test_errors_take_their_grpc_status(client):
    photo = images(reference_photos()[:1])
    assert status_of(lambda: client.infer("nope", [photo]))[0] == "StatusCode.NOT_FOUND"
    assert status_of(lambda: client.infer("lite0", [photo], model_version="7"))[0] == "StatusCode.NOT_FOUND"
    assert status_of(lambda: client.get_model_metadata("nope"))[0] == "StatusCode.NOT_FOUND"
    wrong = triton.InferInput("input", [1, 3, 5, 5], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3, 5, 5), dtype=np.float32))
    code, message = status_of(lambda: client.infer("lite0", [wrong]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "[N, 3, 224, 224]" in message
    corrupt = triton.InferInput("image", [1], "BYTES")
    corrupt.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    assert status_of(lambda: client.infer("lite0", [corrupt]))[0] == "StatusCode.INVALID_ARGUMENT"
    huge = triton.InferInput("image", [1], "BYTES")
    huge.set_data_from_numpy(np.array([b"\0" * (MAX_BYTES + 1)], dtype=np.object_))
    assert status_of(lambda: client.infer("lite0", [huge]))[0] == "StatusCode.RESOURCE_EXHAUSTED"
    # Repository calls need an admin key, as over HTTP (403): Triton's RepositoryIndex as KServe's load.
    for call in (lambda: client.load_model("lite0"), client.get_model_repository_index):
        code, message = status_of(call)
        assert code == "StatusCode.PERMISSION_DENIED" and "admin key" in message


def test_metrics_count_grpc_calls(server, client):
    def count(method, status):
        with urllib.request.urlopen(f"http://{server[0]}/metrics") as response:
            text = response.read().decode()
        pattern = (
            rf'choripan_http_requests_total{{route="/inference.GRPCInferenceService/{method}",'
            rf'method="GRPC",status="{status}"}} (\d+)'
        )
        found = re.search(pattern, text)
        return int(found.group(1)) if found else 0

    counts = lambda: (count("ModelInfer", 200), count("ModelInfer", 404), count("ServerLive", 200))  # noqa: E731
    before = counts()
    client.infer("lite0", [images(reference_photos()[:1])])
    with pytest.raises(InferenceServerException):
        client.infer("nope", [images(reference_photos()[:1])])
    client.is_server_live()
    assert counts() == tuple(n + 1 for n in before)


ADMIN_KEY = "grpc-test-admin-key-0123"
INFER_KEY = "grpc-test-infer-key-0123"


def keys_file(folder: Path) -> Path:
    keys = folder / "api-keys"
    keys.write_text(f"{ADMIN_KEY} admin\n{INFER_KEY} infer\n")
    return keys


class Keyed:
    """Triton's gRPC client sending `key` in the authorization metadata of every call."""

    def __init__(self, client, key: str):
        self._client, self._key = client, key

    def __getattr__(self, name: str):
        method = getattr(self._client, name)
        if name == "close" or not callable(method):
            return method
        return lambda *args, **kwargs: method(*args, headers={"authorization": f"Bearer {self._key}"}, **kwargs)


def test_keys_over_grpc_as_over_http(tmp_path):
    """With CHORIPAN_API_KEYS_FILE, a call needs a key in its metadata (health excepted), and the
    repository's an admin key."""
    process, _, address = start(CHORIPAN_API_KEYS_FILE=str(keys_file(tmp_path)))
    try:
        bare = triton.InferenceServerClient(url=address)
        photo = images(reference_photos()[:1])
        assert bare.is_server_live() and bare.is_server_ready()
        code, message = status_of(lambda: bare.infer("lite0", [photo]))
        assert code == "StatusCode.UNAUTHENTICATED" and "API key" in message
        assert status_of(lambda: Keyed(bare, "a-wrong-key-0123456789").infer("lite0", [photo]))[0] == (
            "StatusCode.UNAUTHENTICATED"
        )
        assert Keyed(bare, INFER_KEY).infer("lite0", [photo]).get_response().model_name == "lite0"
        assert status_of(lambda: Keyed(bare, INFER_KEY).load_model("lite0"))[0] == "StatusCode.PERMISSION_DENIED"
        # Past the keys: no repository here, so a load is refused for that (as over HTTP, 400).
        code, message = status_of(lambda: Keyed(bare, ADMIN_KEY).load_model("lite0"))
        assert code == "StatusCode.INVALID_ARGUMENT" and "--model-repository" in message
        # Its index lists the models it was started with, as over HTTP.
        index = Keyed(bare, ADMIN_KEY).get_model_repository_index(as_json=True)
        assert index == {"models": [{"name": "lite0", "version": "1", "state": "READY"}]}
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


def metric(http: str, series: str) -> int:
    """A series' value in the server's /metrics (0 while it has none)."""
    with urllib.request.urlopen(f"http://{http}/metrics") as response:
        found = re.search(rf"^{re.escape(series)} (\d+)$", response.read().decode(), re.MULTILINE)
    return int(found.group(1)) if found else 0


REFUSED_INFERS = (
    'choripan_http_requests_total{route="/inference.GRPCInferenceService/ModelInfer",method="GRPC",status="429"}'
)


def raw_infer(address: str, key: str | None = None, refused: bool = True) -> grpc.RpcError | dict:
    """A ModelInfer over grpcio itself, which shows the trailing metadata: the error it raised, or with
    `refused` false the answer's trailing metadata."""
    photo = (data_dir() / "chelsea.png").read_bytes()
    request = service_pb2.ModelInferRequest(model_name="lite0")
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(struct.pack("<I", len(photo)) + photo)
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    with grpc.insecure_channel(address) as channel:
        infer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        if not refused:
            return dict(infer.with_call(request, timeout=30, metadata=metadata)[1].trailing_metadata())
        with pytest.raises(grpc.RpcError) as raised:
            infer(request, timeout=30, metadata=metadata)
    return raised.value


def http_status(base: str, path: str, key: str | None = None, source: str = "127.0.0.1") -> tuple[int, dict]:
    """GET `path` from the loopback address `source`: its status and headers."""
    host, port = base.rsplit(":", 1)
    connection = HTTPConnection(host, int(port), timeout=30, source_address=(source, 0))
    try:
        connection.request("GET", path, headers={"authorization": f"Bearer {key}"} if key else {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders())
    finally:
        connection.close()


def assert_rate_limited(error: grpc.RpcError):
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "rate limit" in error.details()
    trailers = dict(error.trailing_metadata())
    assert trailers["choripan-error-code"] == "E_RATE_LIMITED"
    assert 1 <= int(trailers["retry-after"]) <= 10  # a request every 10 s: the next within 10 s
    assert re.fullmatch(r'"per-(key|address)";r=0;t=([1-9]|10)', trailers["ratelimit"]), trailers


def test_the_rate_limit_takes_a_keys_grpc_calls_from_its_http_bucket(tmp_path):
    """With CHORIPAN_RATE_LIMIT and keys, a key's gRPC calls and HTTP requests take from one bucket: past
    it, RESOURCE_EXHAUSTED with the code and retry-after in the trailing metadata, and 429 over HTTP;
    another key's bucket is its own, the health methods are not counted, the refusals are."""
    process, http, address = start(CHORIPAN_RATE_LIMIT="0.1:2", CHORIPAN_API_KEYS_FILE=str(keys_file(tmp_path)))
    try:
        client = triton.InferenceServerClient(url=address)
        photo = images(reference_photos()[:1])
        assert Keyed(client, INFER_KEY).infer("lite0", [photo]).get_response().model_name == "lite0"
        trailers = raw_infer(address, INFER_KEY, refused=False)  # as HTTP's RateLimit fields say it
        assert trailers["ratelimit-policy"] == '"per-key";q=2;w=20' and trailers["ratelimit"].startswith(
            '"per-key";r=0;'
        )
        assert_rate_limited(raw_infer(address, INFER_KEY))
        status, headers = http_status(http, "/v2/models/lite0", INFER_KEY)
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 10
        assert headers["RateLimit"].startswith('"per-key";r=0;')
        assert Keyed(client, ADMIN_KEY).get_model_metadata("lite0", as_json=True)["name"] == "lite0"
        for _ in range(3):
            assert client.is_server_live() and client.is_server_ready()
        assert metric(http, REFUSED_INFERS) == 1
        assert metric(http, "choripan_rate_limited_total") == 2  # the gRPC call's and the HTTP request's
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


def test_the_rate_limit_without_keys_is_the_grpc_peers_address_as_over_http():
    """Without keys, a gRPC call counts against its peer's address, the bucket HTTP requests from that
    address take from; another address's bucket is its own."""
    process, http, address = start(CHORIPAN_RATE_LIMIT="0.1:1")
    try:
        assert http_status(http, "/v2/models/lite0")[0] == 200
        assert_rate_limited(raw_infer(address))
        assert http_status(http, "/v2/models/lite0", source="127.0.0.2")[0] == 200
        assert triton.InferenceServerClient(url=address).is_server_live()
        assert metric(http, REFUSED_INFERS) == 1
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


def test_a_repository_load_over_grpc_serves_each_version(tmp_path, reference):
    """Explicit control: tritonclient's load_model (Triton's request layout) loads the repository's
    versions, model_version picks one and an empty one the highest; a KServe-layout unload unloads."""
    repository = tmp_path / "models"
    for version in ("1", "2"):
        (repository / "lite0" / version).mkdir(parents=True)
        shutil.copy(DEFAULT_PACKAGE, repository / "lite0" / version / "default.pt2")
    process, _, address = start(
        CHORIPAN_MODELS="",
        CHORIPAN_MODEL_REPOSITORY=str(repository),
        CHORIPAN_MODEL_CONTROL="explicit",
        CHORIPAN_WORKERS="1",
        CHORIPAN_API_KEYS_FILE=str(keys_file(tmp_path)),  # repository calls need an admin key
    )
    try:
        client = Keyed(triton.InferenceServerClient(url=address), ADMIN_KEY)
        photo = data_dir() / "chelsea.png"
        assert status_of(lambda: client.infer("lite0", [images([photo])]))[0] == "StatusCode.NOT_FOUND"
        client.load_model("lite0")
        assert client.is_model_ready("lite0", "1") and client.is_model_ready("lite0", "2")
        assert client.get_model_metadata("lite0", as_json=True)["versions"] == ["1", "2"]
        result = client.infer("lite0", [images([photo])], model_version="1")
        assert result.get_response().model_name == "lite0" and result.get_response().model_version == "1"
        np.testing.assert_allclose(
            result.as_numpy("probabilities")[0], reference.probabilities(photo).numpy(), atol=1e-5
        )
        assert client.infer("lite0", [images([photo])]).get_response().model_version == "2"
        assert (
            status_of(lambda: client.infer("lite0", [images([photo])], model_version="3"))[0] == "StatusCode.NOT_FOUND"
        )
        assert status_of(lambda: client.load_model("nope"))[0] == "StatusCode.NOT_FOUND"
        code, message = status_of(lambda: client.load_model("lite0", config="{}"))
        assert code == "StatusCode.INVALID_ARGUMENT" and "config" in message
        with grpc.insecure_channel(address) as channel:  # KServe's layout: model_name is field 1
            unload = channel.unary_unary("/inference.GRPCInferenceService/RepositoryModelUnload")
            unload(b"\n\x05lite0", timeout=30, metadata=(("authorization", f"Bearer {ADMIN_KEY}"),))
        assert status_of(lambda: client.infer("lite0", [images([photo])]))[0] == "StatusCode.NOT_FOUND"
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


def test_sigterm_finishes_the_call_in_hand():
    process, http, grpc = start()
    try:
        client = triton.InferenceServerClient(url=grpc)
        answered = {}
        done = threading.Event()

        def finished(result, error):
            answered.update(result=result, error=error)
            done.set()

        client.async_infer("lite0", [images(reference_photos()[:1] * 32)], finished)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the model holds the call
            with urllib.request.urlopen(f"http://{http}/metrics") as response:
                text = response.read().decode()
            if re.search(r'choripan_(inflight|queue_depth){model="lite0",version="1"} [1-9]', text):
                break
            time.sleep(0.01)
        process.terminate()
        assert done.wait(30) and answered["error"] is None, answered
        assert answered["result"].as_numpy("probabilities").shape == (32, 1000)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
