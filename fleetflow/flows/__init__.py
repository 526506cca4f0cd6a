"""Prefect flows: compositions of tasks; no Kubernetes calls and no templating of their own."""
