"""Every example in docs/routing.md compiles, matches the event shown with it, and does not
match the one shown after "Does not match"."""

import json
import re

import pytest

from connectors.models import Route
from events.intake import routing
from lib import filters
from tests.support.live import ROOT

DOC = (ROOT / "docs" / "routing.md").read_text()
EXAMPLES = DOC[DOC.index("## Examples") : DOC.index("## Speed")]
SECTIONS = re.split(r"^### ", EXAMPLES, flags=re.M)[1:]
JSON_BLOCK = re.compile(r"```json\n(.*?)```", re.S)


def examples():
    for section in SECTIONS:
        title = section.splitlines()[0]
        matching, _, refused = section.partition("Does not match")
        blocks = [json.loads(b) for b in JSON_BLOCK.findall(matching)]
        others = [json.loads(b) for b in JSON_BLOCK.findall(refused)]
        yield pytest.param(blocks[0], blocks[1:], others, id=title)


def as_subject(event):
    return filters.subject(
        data=event["data"],
        headers=event["headers"],
        source=event["source"],
        event_type=event["type"],
    )


def test_the_doc_has_a_dozen_examples():
    assert len(SECTIONS) >= 12


@pytest.mark.parametrize(("document", "matching", "refused"), list(examples()))
def test_each_example_in_the_docs_does_what_it_says(document, matching, refused):
    compiled = filters.compile_filter(document)
    assert matching, "each example shows an event it matches"
    for event in [*matching, *refused]:
        assert set(event) == set(filters.SUBJECT_KEYS), event
    for event in matching:
        subject = as_subject(event)
        assert compiled.matches(subject), compiled.explain(subject)
    for event in refused:
        assert compiled.explain(as_subject(event))


@pytest.mark.django_db
@pytest.mark.parametrize(("document", "matching", "refused"), list(examples()))
def test_each_example_can_be_saved_from_the_admin_and_the_tester_agrees(
    admin_client, document, matching, refused
):
    form = {
        "name": "example",
        "event_type": "*",
        "filter": json.dumps(document),
        "connector": "log",
        "action": "record",
        "params": '{"message": "routed"}',
        "enabled": "on",
        "max_attempts": 8,
        "max_in_flight": 16,
        "backoff_base_seconds": 2,
        "backoff_cap_seconds": 600,
        "on_failure": "block",
    }
    page = admin_client.post("/admin/connectors/route/add/", form)
    assert page.status_code == 302, page.content.decode()[:3000]
    assert Route.objects.get().filter == document

    for event, expected in [*((e, True) for e in matching), *((e, False) for e in refused)]:
        (verdict,) = routing.explain(
            source=event["source"],
            event_type=event["type"],
            payload=event["data"],
            headers=event["headers"],
        )
        assert verdict.matched is expected, verdict.check.reasons
