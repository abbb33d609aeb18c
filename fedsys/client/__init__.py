"""Everything that runs on a client node.

- ``client_app``: the fedsys ClientApp (train, evaluate, describe, secure-aggregation stages);
- ``deployed_app``: the light ClientApp a deployment runs, forwarding to the warm trainer;
- ``warm_worker`` and ``worker_protocol``: the long-lived trainer and its local socket;
- ``task_runner``: forks a pre-imported process per ClientApp task (``fedsys client``);
- ``node_config``: the node-config keys and their parser; ``node_data``: a node's data file;
- ``outbound``, ``secagg_handler``, ``node_state``, ``mapped_safetensors``, ``attack``: what a
  train reply is made of (encoded delta, masked vector, kept residuals, simulated attacks).

Nothing heavy is imported here: ``deployed_app`` must stay free of torch.
"""
