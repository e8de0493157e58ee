"""Backends: each turns the driver contract into one atomic step of its store."""
