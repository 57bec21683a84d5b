"""The execution engine: the executions table is the queue.

- `claims`: taking leases on due executions in batches, per route within max_in_flight.
- `runner`: the guardrail check and attempt row before a connector call, the call itself
  (on a pool thread, no database), and settling the results in batches.
- `leases`: renewing a worker's leases in one statement, and the reaper.
- `wake`: NOTIFY on PostgreSQL when work arrives, and the listener that wakes a worker.
- `heartbeat`: which workers are alive and what they are doing.
- `worker`: the loop of one `manage.py runworker` process.

The rest of `events/` imports this package; it imports only models and lower layers.
"""
