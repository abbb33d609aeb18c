"""Text generation for causal language models with continuous batching.

One :class:`~fedsys.serving.generation.engine.GenerationEngine` per base model runs in its
own thread: requests join the running batch at a token boundary (after their prompt's
prefill) and leave it the step they finish, so a short request never waits for a long one.
LoRA adapters of that base are served side by side from the one copy of its weights.
"""

from fedsys.serving.generation.engine import GenerationEngine, SequenceHandle
from fedsys.serving.generation.events import Finished, TextDelta
from fedsys.serving.generation.limits import GenerationLimits
from fedsys.serving.generation.loading import CausalLM, load_causal_lm
from fedsys.serving.generation.sampling import SamplingParams

__all__ = [
    "CausalLM",
    "Finished",
    "GenerationEngine",
    "GenerationLimits",
    "SamplingParams",
    "SequenceHandle",
    "TextDelta",
    "load_causal_lm",
]
