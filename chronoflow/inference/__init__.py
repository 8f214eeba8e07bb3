"""Inference: validated star inputs and the mixture likelihood, grid posteriors, the model-error term, fast ages and the hierarchical model."""
