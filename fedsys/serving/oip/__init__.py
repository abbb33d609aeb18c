"""The Open Inference Protocol (KServe V2, REST) for the served tensor models."""
