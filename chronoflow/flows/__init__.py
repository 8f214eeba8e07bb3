"""The model: the conditional density (flow), its PyTensor Op, training, the ensemble and model files."""
