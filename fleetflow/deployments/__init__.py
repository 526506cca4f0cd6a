"""Prefect deployments, schedules and automations of the fleetflow platform (the top layer)."""
