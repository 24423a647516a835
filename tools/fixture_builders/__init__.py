"""Fixture builders for tests/fixtures/exported/ (run through tools/make_exported_models.py)."""
