"""Local development stack: simulators and a local Functions host. Never imported by `shared/`."""
