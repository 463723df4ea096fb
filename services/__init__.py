"""fraudstream services: one subpackage per thing that runs or is shared (docs/development.md,
"Architecture"): ``core``, ``scoring``, ``clients``, ``generator``, ``devstack``, ``cli``."""
