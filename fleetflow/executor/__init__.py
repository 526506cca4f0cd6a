"""The fleetflow executor: a long-lived process that runs fleetflow's deployments fast.

Prefect's own runner (``flow.serve``) polls for scheduled runs and starts each one as a new
Python process: about 3 s per run on two cores, and a burst of runs fights over the CPU while
each one imports Prefect again. The executor imports the flows once and runs each claimed flow
run in a thread of a bounded pool with Prefect's own engine (``run_flow``), so a run starts a
fraction of a second after the automation created it, with the same states, logs, parameters
and task retries in the Prefect UI.

- It wakes on ``prefect.flow-run.*`` events (a websocket subscription) and keeps a slow
  fallback poll, which also catches missed events and runs scheduled for later (reconcile).
- It claims a run only from Scheduled, by proposing Pending; the server's orchestration rules
  refuse a second Pending, so any number of executors against one API run each run once.
- Runs of one deployment with the same parameters coalesce: one in flight plus one waiting;
  the rest end Cancelled, named "Superseded", saying which run superseded them (:mod:`.plan`).
- On start it marks as Crashed, then reschedules, the runs a previous life of the same name
  left Pending or Running (:mod:`.recovery`); on SIGTERM it stops claiming and finishes what it
  holds within a grace period, rescheduling anything still unfinished for another executor.
- An executor killed outright (SIGKILL, a lost machine) and never restarted is repaired by the
  others (:mod:`.repair`): each executor sends Prefect heartbeats for the runs it holds, the
  platform's automation crashes a run whose heartbeats stopped for ``repairInterval`` seconds
  (``FLEETFLOW_REPAIR_INTERVAL``, default 90), saying why, and the surviving executors run it
  again, at most three times.

It sits above ``deployments/`` in the house: it starts what the deployments describe.
"""
