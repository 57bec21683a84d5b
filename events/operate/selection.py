"""Which executions or events an operator's command means: ids and filters to a queryset.

`replay`, `approve` and `reject` take the same filters; they are declared and applied here
once, so a filter means the same thing in each.
"""

import datetime

from django.utils import timezone
from django.utils.dateparse import parse_datetime


def when(value: str) -> datetime.datetime:
    """An ISO date/time, or an age such as 30m, 2h, 7d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value and value[-1] in units and value[:-1].isdigit():
        return timezone.now() - datetime.timedelta(seconds=int(value[:-1]) * units[value[-1]])
    parsed = parse_datetime(value) or parse_datetime(value + "T00:00:00")
    if parsed is None:
        raise ValueError(f"not a date or an age: {value!r}")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, datetime.UTC)


# option -> lookup, for the events (replay --unrouted, --blocked) and for the executions
EVENT_FILTERS = {
    "source": "source__name",
    "type": "type",
    "since": "received_at__gte",
    "until": "received_at__lt",
}
EXECUTION_FILTERS = {
    "ids": "pk__in",
    "status": "status",
    "source": "event__source__name",
    "type": "event__type",
    "route": "route__name",
    "since": "created_at__gte",
    "until": "created_at__lt",
}


def add_filter_arguments(parser) -> None:
    """The filters every command that picks executions takes, after their ids."""
    parser.add_argument("--source", help="Only events from this source (name).")
    parser.add_argument("--type", help="Only events of this type.")
    parser.add_argument("--route", help="Only this route (name).")
    parser.add_argument("--since", type=when, help="Created at or after (ISO time or 2h).")
    parser.add_argument("--until", type=when, help="Created before (ISO time or 2h).")


def narrow(queryset, lookups: dict, chosen: dict):
    """`queryset` filtered by each chosen option that has a value and a lookup."""
    return queryset.filter(**{lookups[k]: v for k, v in chosen.items() if v and k in lookups})
