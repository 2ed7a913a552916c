"""Helpers shared by the test modules (never imported from another test module)."""
