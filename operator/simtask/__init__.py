"""simtask-operator: run simulations on Kubernetes as SimulationTask custom resources."""

GROUP = "simtask.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

__all__ = ["API_VERSION", "GROUP", "VERSION"]
