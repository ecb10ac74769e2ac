"""The hub's web applications."""
