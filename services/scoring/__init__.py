"""The scoring microservice: the server (``server``), its client and the wire types they share.

``stream_jobs`` imports ``client`` and ``wire`` only, never ``server``."""
