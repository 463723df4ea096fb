"""The scoring server: ONNX Runtime models, the batch scorer, the HTTP app and its metrics."""
