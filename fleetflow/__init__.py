"""fleetflow: event-driven Database-as-a-Service for Kubernetes fleets, on Prefect."""

__version__ = "0.1.0"
