"""The inference endpoint: FastAPI routers over the model registry, a dynamic batcher, hot
swaps when the registry's active version moves, and Prometheus metrics.

The registry itself lives in ``fedsys.registry`` (shared with training); its public names
are re-exported here, where they used to live. Importing this package does not pull in the
web stack: import ``fedsys.serving.endpoint`` or ``fedsys.serving.runner`` for that.
"""

from fedsys import registry as _registry
from fedsys.registry import *  # noqa: F403  (the names that lived here before the split)

__all__ = list(_registry.__all__)
