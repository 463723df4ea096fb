"""fraudstream models: feature definitions, training, ONNX export and the model registry."""
