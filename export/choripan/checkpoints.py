"""Reading the checkpoints people have: plain state_dicts, wrapped ones, and (only when trusted) pickles."""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from .errors import ExportError

_UNREADABLE = "is not a readable PyTorch checkpoint: it is truncated or corrupt, or torch.save did not write it"
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) ")


def load_checkpoint(path: Path, *, trust_pickle: bool = False) -> object:
    """The checkpoint's contents. Without `trust_pickle`, only tensors and plain containers load.

    torch's own messages are not passed on: they advise `weights_only=False` (what --trust-pickle means here,
    and only for files one trusts), ask to file issues and name its zip reader's internals.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4 … please file an issue": not the user's to act on
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as error:
        # The weights-only unpickler names the first global it refused ("Unsupported global: GLOBAL x.Y was not
        # an allowed global", "unsupported GLOBAL posix.system whose module posix is blocked"); garbage bytes and
        # pickles torch.save did not write fail on an opcode instead.
        refused = _REFUSED_GLOBAL.search(str(error))
        if not trust_pickle and refused:
            raise ExportError(
                f"{path} holds pickled Python objects ({_pickled_globals(path) or refused.group(1)}: a whole model "
                "saved with torch.save(model)?), and unpickling runs code from the file; pass --trust-pickle only "
                "if you trust where it came from, or save model.state_dict() instead"
            ) from error
        raise ExportError(f"{path} {_UNREADABLE}") from error
    except ImportError as error:  # a trusted pickle names classes from modules that are not installed
        raise ExportError(f"{path} pickles objects of {error.name}, which is not installed here") from error
    except OSError as error:
        raise ExportError(f"cannot read {path}: {error.strerror}") from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as error:
        raise ExportError(f"{path} {_UNREADABLE}") from error


def _pickled_globals(path: Path) -> str:
    """The first few globals a torch.save archive's pickle names that the weights-only unpickler refuses."""
    try:
        return ", ".join(sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))[:4])
    except Exception:  # it reads torch.save's zip archives only; the refused global then speaks for them
        return ""


def state_dict_of(checkpoint: object, path: Path | str = "the checkpoint") -> dict[str, torch.Tensor]:
    """The weights inside a checkpoint: a state_dict, one under 'state_dict' or 'model', or a module's."""
    if isinstance(checkpoint, nn.Module):
        return checkpoint.state_dict()
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model"):
            if key in checkpoint and not _is_tensor_dict(checkpoint):
                return state_dict_of(checkpoint[key], path)
        if _is_tensor_dict(checkpoint) and checkpoint:
            return _strip_prefix(dict(checkpoint), "module.")  # saved from DataParallel
    raise ExportError(
        f"{path} holds no state_dict: expected a dict of tensors, or one under 'state_dict' or 'model' "
        f"(found {type(checkpoint).__name__}{_keys_hint(checkpoint)})"
    )


def load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> nn.Module:
    """Loads every weight or explains, by key, why the checkpoint does not fit `what`."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and state_dict[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        for title, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (checkpoint vs model)", mismatched),
        ):
            if keys:
                shown = ", ".join(keys[:8]) + (f", … ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{title}: {shown}")
        raise ExportError(f"the weights do not fit {what}: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)
    return model


def _is_tensor_dict(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values())


def _strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def _keys_hint(value: object) -> str:
    if isinstance(value, dict):
        return f" with keys {', '.join(map(str, list(value)[:6]))}"
    return ""
