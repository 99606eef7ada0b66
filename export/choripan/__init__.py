"""choripan's Python side: PyTorch classifiers in, verified, self-describing TorchScript or AOTInductor
artifacts out, which choripan serves from Node.js (`python -m choripan`, or the `choripan-export` command)."""

import importlib.metadata as _metadata
import os as _os
import warnings as _warnings

from .contract import ARTIFACT as _ARTIFACT

__version__ = _metadata.version("choripan")

# torch 2.14 deprecates torch.jit; TorchScript is one of the formats choripan ships, and the notices it
# prints on every jit call say nothing actionable to choripan's users.
_warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)

# oneDNN's newest instructions, as where Node serves (js/binding.js; the vocabulary says why): an int8
# package's weights are packed at export for the kernels oneDNN picks then, and are checked, verified and
# served with the same. Read at oneDNN's first use; a value of your own wins.
_os.environ.setdefault("ONEDNN_MAX_CPU_ISA", _ARTIFACT["oneDnnMaxCpuIsa"])
