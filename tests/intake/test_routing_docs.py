"""Every example in docs/routing.md compiles, matches the event shown with it, and does not
match the one shown after "Does not match"."""

import json
import re

import pytest

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
