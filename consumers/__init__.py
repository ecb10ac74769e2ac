"""Consumers that write alerts, hub decisions and health CSE flags into PostgreSQL, exactly once."""
