"""choripan's export step: PyTorch classifiers in, verified self-describing TorchScript artifacts out."""

__version__ = "0.1.0"

import warnings as _warnings

# TorchScript is what choripan ships (torch.export + AOTInductor is a later path); the deprecation
# notices torch 2.14 prints on every jit call say nothing actionable to choripan's users.
_warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
