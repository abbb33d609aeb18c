"""One lock between torch.fx tracing and every other forward pass in the process.

``torch.fx`` traces a model by patching ``torch.nn.Module.__call__`` process-wide for the
duration of the trace, so a forward pass on another thread at that moment (the endpoint's
inference thread while a compressed variant is being built) runs through the tracer and
fails with "module is not installed as a submodule". Tracing and serving forwards therefore
take this lock; it is uncontended except while a variant is being built.
"""

from __future__ import annotations

import threading

FX_TRACING = threading.RLock()
