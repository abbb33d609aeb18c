"""The OpenAI API for the served language models: ``/v1/completions``,
``/v1/chat/completions`` and the OpenAI list shape of ``/v1/models``."""
