"""The endpoint's routers, one per concern: predict, the model registry's admin routes, and
health and metrics. ``fedsys.serving.endpoint.create_app`` includes them all."""
