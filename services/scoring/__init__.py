"""The scoring microservice: ONNX Runtime behind a batch HTTP API, and its client."""
