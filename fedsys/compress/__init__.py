"""Compressed variants of a published model: int8, pruned, distilled, low-rank, pruned+int8.

Each variant is built from a global model's state dict and architecture, tuned only on the
server's public split, judged on the test split against the fp32 model, and refused when it
loses more accuracy than ``compress.accuracy_budget``. The package is imported lazily (its
modules pull in torch's quantization stack); the config section lives in ``settings``.
Language-model versions get int8 weight-only and low-rank variants of their merged model,
judged by held-out perplexity against ``compress.perplexity_budget`` (``compress.lm``).
"""
