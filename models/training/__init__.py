"""Labelled data sets, training, ONNX export, evaluation, explanations and the model registry."""
