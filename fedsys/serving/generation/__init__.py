"""Text generation for causal language models with continuous batching.

One ``engine.GenerationEngine`` per base model runs in its own thread: requests join the
running batch at a token boundary (after their prompt's prefill) and leave it the step they
finish, so a short request never waits for a long one. LoRA adapters of that base are served
side by side from the one copy of its weights (``adapters``); ``served.LanguageModels`` maps
model ids to engines. Nothing here imports ``transformers`` or ``peft`` until a language
model is loaded (they take seconds to import).
"""
