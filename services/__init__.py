"""fraudstream services: one subpackage per thing that runs or is shared (the README's
"Architecture"): ``core``, ``scoring``, ``clients``, ``generator``, ``devstack``, ``cli``."""
