"""The admin of the events app, one module per family of models.

- `sources`: sources, their credentials, rejected requests;
- `history`: events, executions and attempts (over millions of rows: see `base`);
- `workers`: bulk operations and worker heartbeats;
- `routes`: the routes list (connectors' route admin, with the executions beside each).

Importing them registers their ModelAdmins with the admin site.
"""

from events.admin import history, routes, sources, workers  # noqa: F401
