"""fraudstream services: the scoring service and the runtime pieces every component shares."""
