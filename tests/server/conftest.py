"""Server tests use the shared fixtures of tests/conftest.py (a real server on a free port)."""
