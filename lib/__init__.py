"""The ground floor: helpers every app may use, which import no app of ours and no settings
module of ours (Django and third-party libraries only).

`lib` rather than `core` or `common`: it holds no domain rules, only pieces any layer may
lean on. import-linter (pyproject.toml) keeps it below guardrails, connectors and events.
"""
