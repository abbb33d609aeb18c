"""Silence torch.ao.quantization's blanket deprecation notices inside compression calls only.

torch 2.13 marks the whole ``torch.ao.quantization`` namespace and every quantized-tensor
constructor as deprecated in favour of torchao. The classifiers' static int8 variant has moved
to torchao's pt2e flow (``fedsys.compress.int8``, no notices); the publish-time dynamic int8
copy (``fedsys.registry.int8_copy``) still uses ``quantize_dynamic``, because torchao's eager
``quantize_`` runs int8 Linear layers 4-20x slower than fp32 on this CPU. The notices carry
no action for callers, so they are filtered locally (a process-wide filter would also hide
them from the user's own code). Observers are built with explicit ``quant_min``/``quant_max``,
so the ``reduce_range`` deprecation is not triggered at all.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, cast

_AO_NOTICES = ("torch.ao.quantization is deprecated", ".*quantized tensor creation functions")
_F = TypeVar("_F", bound=Callable[..., Any])


def quiet_ao(fn: _F) -> _F:
    """Run ``fn`` with torch.ao's deprecation notices silenced."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            for message in _AO_NOTICES:
                warnings.filterwarnings("ignore", message=message)
            return fn(*args, **kwargs)

    return cast(_F, wrapper)
