"""fleetflow's HTTP API: the webhook receiver (the open-source Prefect server has no webhooks).

A request becomes a label change on a registered cluster, the same one ``fleetflow cluster
label`` makes; the label watcher and the Prefect automations take it from there. This package
never imports prefect, flows or tasks.
"""

from fleetflow.webhook.app import create_app, serve
from fleetflow.webhook.auth import TOKEN_ENV, check_bearer, load_or_create_token

__all__ = ["TOKEN_ENV", "check_bearer", "create_app", "load_or_create_token", "serve"]
