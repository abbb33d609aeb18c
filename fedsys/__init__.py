"""fedsys: federated learning on Flower."""
