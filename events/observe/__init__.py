"""Observation: counts and status (`stats`), the admin dashboard (`dashboard`),
Prometheus metrics (`metrics`) and the operator status endpoint (`views`).
"""
