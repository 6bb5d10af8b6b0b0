"""Benchmarks: scripts that print measurements (see README.md here); importable for the demo."""
