"""Intake: a webhook request becomes a stored event and its executions.

- `views`: POST /webhook and /webhook/<source>;
- `parsing`: raw bytes to a payload we are willing to store (limits, JSON checks);
- `ingest`: storing an event exactly once and fanning it out to its routes;
- `openapi`: how the two endpoints are described in the OpenAPI schema.
"""
