"""Sources: who may send, and how an event's id and type are read.

- `credentials`: creating sources, API keys and signing secrets (sealed), rotation;
- `auth`: proving a request (an API key, or a provider's signature) and counting refusals;
- `rules`: where each scheme's event id and type come from, and what a valid one is;
- `catalog`: the per-process cache of API keys and routes, renewed when the configuration
  token changes (intake reads its routes; it sits here, below intake, because `auth`
  reads its keys);
- `demo`: the demo source and operator of `make run`.
"""
