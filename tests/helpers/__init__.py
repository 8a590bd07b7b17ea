"""Plain helpers for tests and benchmarks: servers, test mail, Qt loop helpers.

Nothing here is a fixture; ``tests/conftest.py`` builds the fixtures from these classes and
functions, and test modules import the classes they need for annotations from here.
"""
