"""Use cases: each takes ports (shared.ports) and a clock, and knows nothing of Azure."""
