"""Signed artifacts, with OpenSSF model signing (the `model-signing` package, `pip install 'choripan[sign]'`).

`sign()` writes `<artifact>.sig` beside the artifact: a Sigstore bundle whose DSSE envelope holds an
in-toto statement naming the file's SHA-256, signed with an elliptic-curve private key (PEM, P-256,
P-384 or P-521). Anyone can check it with the standard's own tool
(`model_signing verify key ARTIFACT --signature ARTIFACT.sig --public_key KEY.pub`); choripan's loaders
check it against the public keys they trust — Node with its own crypto (js/signature.js), Python here
with model-signing — and then load the file only if its bytes have the digest that was signed.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from .errors import ExportError

TRUSTED_KEYS_VARIABLE = "CHORIPAN_TRUSTED_KEYS"


def signature_path(artifact: Path) -> Path:
    """`<artifact>.sig` beside it, where the loaders look by default."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".sig")


def _library():
    try:
        import model_signing
    except ImportError as error:
        raise ExportError(f"signing needs the model-signing package ({error}): pip install 'choripan[sign]'") from error
    return model_signing


def sign(artifact: Path, private_key: Path, password: bytes | None = None) -> Path:
    """Signs `artifact` with `private_key` (an elliptic-curve key in PEM) and returns the signature's path."""
    artifact, private_key = Path(artifact), Path(private_key)
    for path, what in ((artifact, "artifact"), (private_key, "private key")):
        if not path.is_file():
            raise ExportError(f"cannot sign: the {what} {path} is not a file")
    model_signing = _library()
    signature = signature_path(artifact)
    try:
        signer = model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key, password=password)
        signer.sign(artifact, signature)
    except (ValueError, TypeError) as error:
        raise ExportError(f"cannot sign {artifact} with {private_key}: {error}") from error
    return signature


def trusted_keys_from_environment() -> list[Path]:
    """The public keys CHORIPAN_TRUSTED_KEYS lists (comma-separated PEM files), as the server reads it."""
    text = os.environ.get(TRUSTED_KEYS_VARIABLE, "")
    return [Path(entry.strip()) for entry in text.split(",") if entry.strip()]


def verified_digest(artifact: Path, trusted_keys: list[Path], signature: Path | None = None) -> str:
    """The SHA-256 of `artifact` that one of `trusted_keys` signed; ExportError(E_MODEL_LOAD) when none did.

    Pass it to the loaders as `sha256` (artifact.load, choripan_core.Model): they then load only a file
    with exactly these bytes, however it changes after this check.
    """
    artifact = Path(artifact)
    signature = Path(signature) if signature else signature_path(artifact)
    if not trusted_keys:
        raise ExportError("no trusted keys were given", "E_INVALID_ARGUMENT")
    for key in trusted_keys:
        if not Path(key).is_file():
            raise ExportError(f"the trusted key {key} is not a file", "E_INVALID_ARGUMENT")
    if not signature.is_file():
        raise ExportError(
            f"cannot load model {artifact}: it has no signature ({signature} is missing); "
            "sign it with `python -m choripan sign`",
            "E_MODEL_LOAD",
        )
    model_signing = _library()
    reasons = []
    for key in trusted_keys:
        try:
            model_signing.verifying.Config().use_elliptic_key_verifier(public_key=key).verify(artifact, signature)
        except Exception as error:  # model-signing raises ValueError, InvalidSignature (no message), and others
            reasons.append(f"{Path(key).name}: {str(error).strip() or type(error).__name__}")
            continue
        return _signed_file_digest(signature, artifact)
    raise ExportError(
        f"cannot load model {artifact}: its signature {signature} was not made by any of the {len(trusted_keys)} "
        f"trusted key(s), or it does not match the file ({'; '.join(reasons)})",
        "E_MODEL_LOAD",
    )


def _signed_file_digest(signature: Path, artifact: Path) -> str:
    """The file's digest in a signature that model-signing verified: the one resource, named '.'."""
    bundle = json.loads(signature.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    resources = statement["predicate"]["resources"]
    if len(resources) != 1 or resources[0]["name"] != "." or resources[0]["algorithm"] != "sha256":
        raise ExportError(
            f"cannot load model {artifact}: its signature {signature} does not sign a single file by its SHA-256 "
            "(sign the artifact file itself)",
            "E_MODEL_LOAD",
        )
    return resources[0]["digest"]
