"""Uses of the ages: forward models, systematics sweeps and budgets, leave-one-cluster-out validation, predictive checks."""
