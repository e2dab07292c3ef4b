"""The control plane: the rollout controller, its state store, config reload, preflight and the admin API."""
