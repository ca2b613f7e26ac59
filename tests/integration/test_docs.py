"""The documentation's examples hold: every event example in docs/ and the README passes
docs/event.schema.json, so an operator copying one gets what the agent writes. Needs no agent.

Rule for the docs: a ```json block is either one whole event (one JSON object, possibly shown
wrapped over several lines) or is marked abridged by containing "..."; an abridged block is not
checked. At least the reference example of docs/events.md is whole."""

import glob
import json
import os
import re

from conftest import TESTS_DIR, schema_problems

REPO = os.path.abspath(os.path.join(TESTS_DIR, "..", ".."))
DOCS = sorted(glob.glob(os.path.join(REPO, "docs", "*.md"))) + [os.path.join(REPO, "README.md")]


def json_blocks(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"^```json\n(.*?)^```", text, re.S | re.M)


def whole_examples():
    """(file name, parsed block) of every unabridged ```json block in the docs."""
    found = []
    for path in DOCS:
        for block in json_blocks(path):
            if "..." in block:
                continue
            found.append((os.path.relpath(path, REPO), json.loads(block)))
    return found


def test_unabridged_json_blocks_parse():
    """A ```json block without "..." is valid JSON (json.loads raises otherwise)."""
    assert whole_examples(), "no whole JSON example found in the docs"


def test_every_event_example_passes_the_schema():
    events = [(name, obj) for name, obj in whole_examples() if obj.get("type") == "NetworkEvent"]
    names = {name for name, _ in events}
    assert "docs/events.md" in names, "docs/events.md has no whole event example"
    failures = [(name, schema_problems(obj)) for name, obj in events if schema_problems(obj)]
    assert failures == [], failures


def test_schema_rejects_what_it_should():
    """The check above can fail: the events.md example without a required field does not pass."""
    name, example = next((n, o) for n, o in whole_examples() if n == "docs/events.md")
    broken = json.loads(json.dumps(example))
    del broken["network_event"]["cookie"]
    assert schema_problems(broken), f"{name}: the schema accepts an event without a cookie"
