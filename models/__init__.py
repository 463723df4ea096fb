"""fraudstream models, one subpackage per concern: ``features`` (the feature engine: definitions
and the fold shared online and offline), ``online`` (the Redis store), ``lake`` (the archive
and erasure) and ``training`` (data sets, training, export, the registry)."""
