"""Signed artifacts on the Python side: `python -m choripan sign`, `verify` and `predict --trusted-key`,
interoperable with OpenSSF model signing's own command line, and the signed digest enforced by both
loaders (choripan_core and choripan.artifact)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import choripan_core
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from choripan import artifact
from choripan.errors import ExportError
from choripan.signing import verified_digest


def _key_pair(folder: Path, name: str, curve=ec.SECP256R1) -> tuple[Path, Path]:
    key = ec.generate_private_key(curve())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def _export(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "choripan", *map(str, args)], capture_output=True, text=True, env=env)


@pytest.fixture
def signed(default_artifact, tmp_path):
    model = tmp_path / "model.pt"
    shutil.copy(default_artifact, model)
    private, public = _key_pair(tmp_path, "signer")
    result = _export("sign", model, "--key", private)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {model}.sig"
    return model, public, _key_pair(tmp_path, "other", ec.SECP384R1)[1]


def test_the_standards_own_tool_verifies_the_signature(signed):
    model, public, other = signed
    tool = Path(sys.executable).with_name("model_signing")
    command = [tool, "verify", "key", model, "--signature", f"{model}.sig", "--public_key"]
    assert subprocess.run([*command, public], capture_output=True).returncode == 0
    assert subprocess.run([*command, other], capture_output=True).returncode != 0


def test_verify_and_predict_with_trusted_keys(signed, photos):
    model, public, other = signed
    verified = _export("verify", model, "--trusted-key", other, "--trusted-key", public)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert verified.returncode == 0 and verified.stdout.strip() == f"{model}: signed by a trusted key (sha256 {digest})"
    predicted = _export("predict", "--model", model, "--trusted-key", public, photos / "chelsea.png")
    assert predicted.returncode == 0, predicted.stderr
    # CHORIPAN_TRUSTED_KEYS, as the server reads it, when no --trusted-key is given.
    untrusting = {**os.environ, "CHORIPAN_TRUSTED_KEYS": str(other)}
    refused = _export("predict", "--model", model, photos / "chelsea.png", env=untrusting)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "was not made by any of the 1 trusted key(s)" in refused.stderr and "(E_MODEL_LOAD)" in refused.stderr


def test_a_model_changed_after_signing_is_refused_by_both_loaders(signed, tmp_path):
    model, public, _ = signed
    signed_digest = verified_digest(model, [public])
    with open(model, "ab") as f:
        f.write(b"appended")  # after the signature was checked
    for load in (
        lambda: choripan_core.Model(str(model), workers=1, warmup=False, sha256=signed_digest),
        lambda: artifact.load(model, sha256=signed_digest),
    ):
        with pytest.raises((choripan_core.Error, ExportError), match=f"not the {signed_digest} it must have"):
            load()
    with pytest.raises(ExportError, match="does not match|was not made by") as caught:
        verified_digest(model, [public])
    assert caught.value.code == "E_MODEL_LOAD"


def test_signing_errors_are_one_line(default_artifact, tmp_path):
    missing = _export("sign", default_artifact, "--key", tmp_path / "missing.pem")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "is not a file" in missing.stderr
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("hello")
    copy = tmp_path / "model.pt"
    shutil.copy(default_artifact, copy)
    result = _export("sign", copy, "--key", not_a_key)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert not Path(f"{copy}.sig").exists()
    unsigned = _export("verify", copy, "--trusted-key", _key_pair(tmp_path, "k")[1])
    assert unsigned.returncode == 2 and "it has no signature" in unsigned.stderr
