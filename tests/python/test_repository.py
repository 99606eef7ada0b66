"""A model repository (`choripan serve --model-repository DIR`) as Triton's own clients see it: the
repository extension's index (over HTTP and gRPC), load and unload, inference from each version, a
version loaded under constant load, a file that does not load, polling, and names and paths that try to
leave DIR.

The versions are told apart by their labels: each is a tiny classifier exported with labels of its own
(`one-a`, `one-b`; `two-a`, …), so an answer names the version that gave it."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from openapi_spec_validator import validate
from torch import nn
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from choripan import artifact
from choripan.imaging import Preprocessing
from choripan.tracing import export_classifier

from .conftest import CAT_LABELS, ROOT

CAT = (ROOT / "examples" / "cat.jpg").read_bytes()
# Repository calls need an admin key (docs/service.md#api-keys); with keys, every inference needs one too.
ADMIN_KEY = "repository-test-admin-key"
INFER_KEY = "repository-test-infer-key"
AUTHORIZATION = {"Authorization": f"Bearer {ADMIN_KEY}"}


class Authorized:
    """Triton's client with the admin key on every call."""

    def __init__(self, client: triton.InferenceServerClient):
        self._client = client

    def __getattr__(self, name: str):
        method = getattr(self._client, name)
        if name == "close" or not callable(method):
            return method
        # A copy each call: tritonclient adds its own headers (Inference-Header-Content-Length) to the dict.
        return lambda *args, **kwargs: method(*args, headers=dict(AUTHORIZATION), **kwargs)


DEFAULT_MODEL = ROOT / "models" / "default.pt"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Tiny classifiers, one per tag, each answering labels of its own (`one-a`, `one-b`, …)."""
    folder = tmp_path_factory.mktemp("tiny")
    exported = {}
    for seed, tag in enumerate(["one", "two", "three"]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        metadata = artifact.Metadata(
            name="tiny",
            labels=[f"{tag}-a", f"{tag}-b"],
            preprocessing=Preprocessing(),
            source=artifact.Source(kind="custom", arch="tiny"),
        )
        exported[tag] = export_classifier(model, metadata, folder / f"{tag}.pt", progress=False)
    return exported


def place(repository: Path, name: str, version: int | str, source: Path, file: str = "model.pt") -> Path:
    """Puts `source` in as `version` of `name`, as an operator should: written beside, then renamed into place."""
    incoming = repository / name / f".incoming-{version}"
    incoming.mkdir(parents=True)
    shutil.copy(source, incoming / file)
    incoming.rename(repository / name / str(version))
    return repository / name / str(version) / file


class Server:
    """`choripan serve --model-repository` on an ephemeral loopback port, its log lines collected."""

    def __init__(self, repository: Path, control: str, **env: str):
        command = ["node", str(ROOT / "bin" / "choripan.js"), "serve", "--port", "0"]
        command += ["--model-repository", str(repository), "--model-control", control]
        keys = repository.parent / "api-keys"
        keys.write_text(f"{ADMIN_KEY} admin\n{INFER_KEY} infer\n")
        env = {"HOST": "127.0.0.1", "CHORIPAN_API_KEYS_FILE": str(keys), **env}
        self.process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
        self.lines: list[dict] = []
        listening = threading.Event()

        def read():
            for line in self.process.stdout:
                record = json.loads(line)
                self.lines.append(record)
                if "port" in record:
                    self.port, self.grpc_port = record["port"], record.get("grpcPort")
                    listening.set()
            listening.set()

        threading.Thread(target=read, daemon=True).start()
        assert listening.wait(60) and self.process.poll() is None, f"the server did not start: {self.lines}"
        self.url = f"127.0.0.1:{self.port}"
        self.client = Authorized(triton.InferenceServerClient(url=self.url))

    def request(self, path: str, body: bytes | None = None) -> tuple[int, dict | str]:
        """A request sent as it is written: no client of ours normalises `path`."""
        method, headers = ("GET", {}) if body is None else ("POST", {"Content-Type": "application/octet-stream"})
        headers = {**headers, **AUTHORIZATION}
        request = urllib.request.Request(f"http://{self.url}{path}", data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text

    def stop(self):
        self.process.terminate()
        assert self.process.wait(timeout=30) == 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.stop()


def top_label(client: triton.InferenceServerClient, name: str, version: str = "") -> tuple[str, str]:
    """The most probable label of the photo, and the version that answered."""
    image = triton.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([CAT], dtype=np.object_))
    top = triton.InferRequestedOutput("probabilities", class_count=1)
    result = client.infer(name, [image], model_version=version, outputs=[top])
    entry = result.as_numpy("probabilities")[0][0]
    label = (entry.decode() if isinstance(entry, bytes) else entry).split(":", 2)[2]
    return label, result.get_response()["model_version"]


INFER = json.dumps(
    {
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(CAT).decode()]}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 1}}],
    }
).encode()


def infer(url: str, path: str) -> tuple[int, str]:
    """One inference over plain HTTP (for the threads of a constant load): the status, and the top label."""
    request = urllib.request.Request(f"http://{url}{path}", data=INFER, method="POST", headers=AUTHORIZATION)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())["outputs"][0]["data"][0].split(":", 2)[2]
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for(condition, seconds: float = 15):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)


@pytest.fixture
def repository(tmp_path, tiny) -> Path:
    """Two models: tiny, versions 1 and 2; lite0 (the default model), version 1."""
    folder = tmp_path / "models"
    place(folder, "tiny", 1, tiny["one"])
    place(folder, "tiny", 2, tiny["two"])
    place(folder, "lite0", 1, DEFAULT_MODEL, "default.pt")
    return folder


def test_index_load_infer_each_version_and_unload(repository):
    with Server(repository, "explicit") as server:
        client = server.client
        unloaded = [
            {"name": "lite0", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"},
            {"name": "tiny", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"},
            {"name": "tiny", "version": "2", "state": "UNAVAILABLE", "reason": "unloaded"},
        ]
        assert client.get_model_repository_index() == unloaded
        assert client.is_server_ready() and not client.is_model_ready("tiny")

        client.load_model("tiny")
        client.load_model("lite0")
        assert client.get_model_repository_index() == [
            {"name": "lite0", "version": "1", "state": "READY"},
            {"name": "tiny", "version": "1", "state": "READY"},
            {"name": "tiny", "version": "2", "state": "READY"},
        ]
        assert client.is_model_ready("tiny", "1") and client.is_model_ready("tiny", "2")
        assert client.get_model_metadata("tiny")["versions"] == ["1", "2"]
        assert top_label(client, "tiny", "1")[0].startswith("one-")
        assert top_label(client, "tiny", "2")[0].startswith("two-")
        label, version = top_label(client, "tiny")  # no version: the highest
        assert label.startswith("two-") and version == "2"
        assert top_label(client, "lite0")[0] in CAT_LABELS
        status, answer = server.request("/predict?model=tiny", CAT)
        assert status == 200 and answer["label"].startswith("two-")

        status, spec = server.request("/openapi.json")
        validate(spec)
        assert {"/v2/repository/index", "/v2/repository/models/{name}/load"} <= set(spec["paths"])

        client.unload_model("tiny")
        wait_for(lambda: not client.is_model_ready("tiny"))
        with pytest.raises(InferenceServerException) as refused:
            top_label(client, "tiny")
        assert refused.value.status() == "404"
        # KServe's clients may ask for the ready ones only; tritonclient's HTTP client asks for all.
        ready = server.request("/v2/repository/index", b'{"ready": true}')
        assert ready == (200, [{"name": "lite0", "version": "1", "state": "READY"}])
        assert top_label(client, "lite0")[0] in CAT_LABELS

        def disposed_once_unloaded(version: int) -> bool:
            # Versions reloaded on a new share of the cores were disposed before, each copy once answered.
            said = [line["msg"] for line in server.lines]
            unloaded = said.index(f"model tiny version {version} unloaded: it takes no new request")
            return f"model tiny version {version} disposed, its requests answered" in said[unloaded:]

        wait_for(lambda: disposed_once_unloaded(1) and disposed_once_unloaded(2))


def grpc_status(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    """The status of a gRPC call that fails, and its error code (the trailing `choripan-error-code`)."""
    with pytest.raises(grpc.RpcError) as raised:
        call(*args, **kwargs)
    return raised.value.code(), dict(raised.value.trailing_metadata())["choripan-error-code"]


def test_the_index_over_grpc_lists_what_http_lists(repository, tmp_path, tiny):
    """Triton's RepositoryIndex, which KServe's .proto lacks: tritonclient.grpc reads the same index as
    over HTTP (each version, its state and reason), `ready` filters, and the key rule is the other
    repository calls'."""
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(tiny["three"].read_bytes()[:5000])
    place(repository, "tiny", 3, corrupt)
    with Server(repository, "explicit", CHORIPAN_GRPC_PORT="0") as server:
        address = f"127.0.0.1:{server.grpc_port}"
        client = triton_grpc.InferenceServerClient(address)
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}

        def index():
            grpc_index = client.get_model_repository_index(headers=admin, as_json=True)["models"]
            assert server.request("/v2/repository/index", b"") == (200, grpc_index)
            return grpc_index

        assert [(e["name"], e["version"], e["state"], e["reason"]) for e in index()] == [
            ("lite0", "1", "UNAVAILABLE", "unloaded"),
            ("tiny", "1", "UNAVAILABLE", "unloaded"),
            ("tiny", "2", "UNAVAILABLE", "unloaded"),
            ("tiny", "3", "UNAVAILABLE", "unloaded"),
        ]
        with pytest.raises(InferenceServerException, match="version 3 did not load"):
            client.load_model("tiny", headers=admin)
        [*served, failed] = index()
        assert served == [
            {"name": "lite0", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"},
            {"name": "tiny", "version": "1", "state": "READY"},
            {"name": "tiny", "version": "2", "state": "READY"},
        ]
        assert failed["state"] == "UNAVAILABLE" and failed["reason"].startswith("cannot load model ")

        with grpc.insecure_channel(address) as channel:
            call = channel.unary_unary(
                "/inference.GRPCInferenceService/RepositoryIndex",
                response_deserializer=service_pb2.RepositoryIndexResponse.FromString,
            )

            def raw(request: bytes, key: str | None = ADMIN_KEY):
                metadata = (("authorization", f"Bearer {key}"),) if key else ()
                return call(request, timeout=30, metadata=metadata)

            ready = raw(service_pb2.RepositoryIndexRequest(ready=True).SerializeToString())
            assert [(m.name, m.version, m.state, m.reason) for m in ready.models] == [
                ("tiny", "1", "READY", ""),
                ("tiny", "2", "READY", ""),
            ]
            elsewhere = service_pb2.RepositoryIndexRequest(repository_name="other").SerializeToString()
            assert grpc_status(raw, elsewhere) == (grpc.StatusCode.INVALID_ARGUMENT, "E_INVALID_ARGUMENT")
            for malformed in [b"\xff\xff\xff", b"\x0a\x05ab", b"\x10"]:  # a tag cut short, a string cut short, no value
                assert grpc_status(raw, malformed) == (grpc.StatusCode.INVALID_ARGUMENT, "E_INVALID_ARGUMENT")
            # The other repository calls' rule: an admin key, none or a wrong one refused, an infer key not enough.
            assert grpc_status(raw, b"", None) == (grpc.StatusCode.UNAUTHENTICATED, "E_UNAUTHORIZED")
            assert grpc_status(raw, b"", "a-wrong-key-0123456789") == (
                grpc.StatusCode.UNAUTHENTICATED,
                "E_UNAUTHORIZED",
            )
            assert grpc_status(raw, b"", INFER_KEY) == (grpc.StatusCode.PERMISSION_DENIED, "E_FORBIDDEN")
            # Loads and unloads in Triton's layout name no other repository either.
            for method, request in [
                ("RepositoryModelLoad", service_pb2.RepositoryModelLoadRequest),
                ("RepositoryModelUnload", service_pb2.RepositoryModelUnloadRequest),
            ]:
                change = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
                named = request(repository_name="other", model_name="tiny").SerializeToString()
                assert grpc_status(change, named, timeout=30, metadata=admin.items()) == (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "E_INVALID_ARGUMENT",
                )
            assert [m["state"] for m in index()[1:3]] == ["READY", "READY"]

        status, metrics = server.request("/metrics")
        route = 'route="/inference.GRPCInferenceService/RepositoryIndex",method="GRPC"'
        counted = {
            status: int(count)
            for status, count in re.findall(rf"choripan_http_requests_total{{{route},status=\"(\d+)\"}} (\d+)", metrics)
        }
        assert counted == {"200": 4, "400": 4, "401": 2, "403": 1}


def test_a_version_loaded_under_constant_load_answers_every_request(tmp_path, tiny):
    repository = tmp_path / "models"
    place(repository, "tiny", 1, tiny["one"])
    with Server(repository, "explicit") as server:
        server.client.load_model("tiny")
        answers: list[tuple[float, str, int, str]] = []  # sent at, path, status, label
        stop = threading.Event()

        def client(path: str):
            while not stop.is_set():
                sent = time.monotonic()
                answers.append((sent, path, *infer(server.url, path)))

        threads = [
            threading.Thread(target=client, args=(p,))
            for p in ["/v2/models/tiny/infer"] * 2 + ["/v2/models/tiny/versions/1/infer"]
        ]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(answers) > 20)
        # A new version: once loaded, it answers what names no version.
        asked = time.monotonic()
        place(repository, "tiny", 2, tiny["two"])
        server.client.load_model("tiny")
        added = time.monotonic()
        # Version 1 changed in place (renamed over, as an operator replaces a file): loaded beside the one it replaces.
        shutil.copy(tiny["three"], repository / "tiny" / "1" / "incoming.tmp")
        os.replace(repository / "tiny" / "1" / "incoming.tmp", repository / "tiny" / "1" / "model.pt")
        server.client.load_model("tiny")
        changed = time.monotonic()
        wait_for(lambda: sum(sent > changed for sent, *_ in answers) > 20)
        stop.set()
        for thread in threads:
            thread.join()
        wait_for(
            lambda: any(line["msg"] == "model tiny version 1 disposed, its requests answered" for line in server.lines)
        )

    assert [a for a in answers if a[2] != 200] == []
    before = [label for sent, _, _, label in answers if sent < asked]
    assert before and all(label.startswith("one-") for label in before)
    latest = [label for sent, path, _, label in answers if sent > added and "versions" not in path]
    assert latest and all(label.startswith("two-") for label in latest)
    changed_v1 = [label for sent, path, _, label in answers if sent > changed and "versions/1" in path]
    assert changed_v1 and all(label.startswith("three-") for label in changed_v1)


def test_a_file_that_does_not_load_leaves_the_old_version_serving(tmp_path, tiny):
    repository = tmp_path / "models"
    place(repository, "tiny", 1, tiny["one"])
    with Server(repository, "explicit") as server:
        client = server.client
        client.load_model("tiny")
        corrupt = tmp_path / "corrupt.pt"
        corrupt.write_bytes(tiny["two"].read_bytes()[:5000])  # a truncated copy
        place(repository, "tiny", 2, corrupt)
        with pytest.raises(InferenceServerException) as failed:
            client.load_model("tiny")
        assert failed.value.status() == "500"
        assert failed.value.message().startswith("E_MODEL_LOAD: model tiny version 2 did not load: ")
        assert failed.value.message().endswith("; tiny goes on serving version 1")
        label, version = top_label(client, "tiny")
        assert label.startswith("one-") and version == "1"
        [entry] = [e for e in client.get_model_repository_index() if e.get("version") == "2"]
        assert entry["state"] == "UNAVAILABLE" and entry["reason"].startswith("cannot load model ")

        # Version 1 replaced in place by a file that is not an artifact: version 1 as it was goes on.
        shutil.rmtree(repository / "tiny" / "2")
        (repository / "tiny" / "1" / "model.pt").write_bytes(b"not a model")
        with pytest.raises(
            InferenceServerException, match="version 1 did not load: .*the version 1 loaded before goes on serving"
        ):
            client.load_model("tiny")
        assert top_label(client, "tiny", "1")[0].startswith("one-")

        status, metrics = server.request("/metrics")
        assert 'choripan_model_load_failures_total{model="tiny",version="2"} 1' in metrics
        assert 'choripan_model_load_failures_total{model="tiny",version="1"} 1' in metrics
        logged = [line for line in server.lines if line.get("errorCode") == "E_MODEL_LOAD" and line["level"] == 50]
        assert [line["version"] for line in logged] == [2, 1]


def test_poll_notices_added_changed_and_removed_versions(tmp_path, tiny):
    repository = tmp_path / "models"
    place(repository, "tiny", 1, tiny["one"])
    with Server(repository, "poll", CHORIPAN_REPOSITORY_POLL_MS="200") as server:
        client = server.client
        label, version = top_label(client, "tiny")
        assert label.startswith("one-") and version == "1"
        place(repository, "tiny", 2, tiny["two"])
        wait_for(lambda: client.is_model_ready("tiny", "2"))
        assert top_label(client, "tiny")[0].startswith("two-")

        shutil.rmtree(repository / "tiny" / "2")
        wait_for(lambda: server.request("/v2/models/tiny/versions/2")[0] == 404)
        assert top_label(client, "tiny")[0].startswith("one-")

        shutil.copy(tiny["three"], repository / "tiny" / "1" / "incoming.tmp")
        os.replace(repository / "tiny" / "1" / "incoming.tmp", repository / "tiny" / "1" / "model.pt")
        wait_for(lambda: top_label(client, "tiny")[0].startswith("three-"))

        with pytest.raises(InferenceServerException, match="the model control mode is poll") as refused:
            client.load_model("tiny")
        assert refused.value.status() == "400"


def test_none_loads_the_repository_at_start_and_a_version_that_does_not_load_stops_it(repository, tmp_path):
    with Server(repository, "none") as server:
        assert [e["state"] for e in server.client.get_model_repository_index()] == ["READY"] * 3
        with pytest.raises(InferenceServerException, match="the model control mode is none"):
            server.client.unload_model("tiny")
    (repository / "tiny" / "2" / "model.pt").write_bytes(b"not a model")
    run = subprocess.run(
        ["node", str(ROOT / "bin" / "choripan.js"), "serve", "--port", "0", "--model-repository", str(repository)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert run.stderr.startswith("choripan: E_MODEL_LOAD: model tiny version 2 did not load: cannot load model ")


def test_names_and_paths_that_leave_the_repository_are_refused(repository, tmp_path, tiny):
    outside = tmp_path / "outside"
    place(outside, "elsewhere", 1, tiny["three"])
    (repository / "escape").symlink_to(outside / "elsewhere")  # a model folder leading outside
    (repository / "tiny" / "3").symlink_to(outside / "elsewhere" / "1")  # a version folder leading outside
    (repository / "tiny" / "4").mkdir()
    (repository / "tiny" / "4" / "model.pt").symlink_to(outside / "elsewhere" / "1" / "model.pt")  # an artifact
    (repository / "tiny" / "05").mkdir()  # not a version's spelling: not read
    (repository / "not a name").mkdir()
    (repository / "inside").symlink_to(repository / "lite0")  # a link that stays inside is followed
    with Server(repository, "explicit") as server:
        client = server.client
        index = client.get_model_repository_index()
        assert {e["name"] for e in index} == {"inside", "lite0", "tiny"}
        reasons = {e["version"]: e.get("reason") for e in index if e["name"] == "tiny"}
        assert reasons["3"] == "its folder leads outside the repository"
        assert reasons["4"] == "its folder holds model.pt, which leads outside the repository"
        assert set(reasons) == {"1", "2", "3", "4"}

        with pytest.raises(
            InferenceServerException, match=r"^\[404\] E_NOT_FOUND: the model repository has no model named escape$"
        ):
            client.load_model("escape")
        with pytest.raises(
            InferenceServerException, match="version 4 did not load: its folder holds model.pt, which leads outside"
        ):
            client.load_model("tiny")
        assert client.is_model_ready("tiny", "2") and not client.is_model_ready("tiny", "3")
        assert server.request("/v2/models/tiny/versions/4")[0] == 404
        client.load_model("inside")
        assert top_label(client, "inside")[0] in CAT_LABELS

        for path in ["..", "%2e%2e", "..%2Fescape", "%2Fetc", "a%00b", "-x"]:
            status, answer = server.request(f"/v2/repository/models/{path}/load", b"{}")
            assert status == 400 and answer["error"].startswith("E_INVALID_ARGUMENT: "), (path, status, answer)
        with pytest.raises(InferenceServerException, match="never its files or configuration: config"):
            client.load_model("tiny", config="{}")
        with pytest.raises(InferenceServerException, match="file:1/model.pt"):
            client.load_model("tiny", config="{}", files={"file:1/model.pt": b"x"})
        # The path of a request is not normalised on the way: /v2/repository/models/../load names '..'.
        status, _ = server.request("/v2/repository/models/../load", b"{}")
        assert status == 400
    warned = {line["msg"] for line in server.lines if line["level"] == 40}
    assert "model escape in the repository leads outside it: it is not served" in warned
    assert any(message.startswith("not a name in the model repository is not a model's name") for message in warned)
