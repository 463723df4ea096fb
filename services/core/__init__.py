"""The shared core: the contract, settings, Kafka and Redis client configuration, errors, codes.

It imports nothing else of the project; every other package may import it."""
