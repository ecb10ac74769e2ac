"""Shared plumbing for hubstream: settings, topic catalogue and the command line."""
