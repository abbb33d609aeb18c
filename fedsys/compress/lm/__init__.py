"""Compressed variants of a language-model version: int8 weight-only and low-rank.

Both are built from the *merged* model (an adapter version is folded into its base first),
judged by perplexity on held-out text against that merged fp32 model, and refused over
``compress.perplexity_budget``; they are signed into the version beside the classifier
variants' layout (``<version>/variants/<variant>/``) and served through ``/v1/completions``.
"""
