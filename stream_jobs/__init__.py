"""fraudstream stream jobs: the PyFlink decision job and the faust feedback app."""
