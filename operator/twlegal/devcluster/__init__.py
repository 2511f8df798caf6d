"""A local Kubernetes control plane from upstream sources (`twlegal dev cluster`), for tests and demos."""
