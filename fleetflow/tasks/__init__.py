"""Prefect tasks: thin wrappers over the fleetflow core that add retries, caching and result policy."""
