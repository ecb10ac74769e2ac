"""Producers: turn event files and simulations into messages on the input topics."""
