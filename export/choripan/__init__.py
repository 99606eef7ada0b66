"""choripan's Python side: PyTorch classifiers in, verified, self-describing TorchScript or AOTInductor
artifacts out, which choripan serves from Node.js (`python -m choripan`, or the `choripan-export` command)."""

import importlib.metadata as _metadata
import warnings as _warnings

__version__ = _metadata.version("choripan")

# torch 2.14 deprecates torch.jit; TorchScript is one of the formats choripan ships, and the notices it
# prints on every jit call say nothing actionable to choripan's users.
_warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
