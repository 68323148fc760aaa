"""Thin command-line scripts over mtp (run as `python -m train.<name>`)."""
