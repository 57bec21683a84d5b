"""The README's shell examples, run against a real server: every `# {...}` line in them
is what the server answers.

In an expected answer, a string in angle brackets (`"<uuid>"`) stands for any string,
and `"<same uuid>"` for the one `<uuid>` stood for last; `...` in an object allows more
fields. Each block runs as one shell script (variables carry over), against the live
runtime in place of localhost:8080. A GET that does not match yet is retried for a few
seconds, and after each step the test waits for the worker to run what is due, as a
person reading along would.
"""

import json
import re
import subprocess
import time

import pytest

from tests.support.live import ROOT

pytestmark = pytest.mark.live

README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
MARK = "@@readme-step@@"


def blocks() -> list[str]:
    """The shell blocks that talk to the demo server and say what it answers."""
    return [b for b in BLOCK.findall(README) if "localhost:8080" in b and "\n# {" in b]


def steps(block: str) -> list[tuple[str, str | None]]:
    """(command, expected answer or None) in the block's order. A command runs to the first
    line not ending in a backslash; its answer is a `# {` comment right after it, with its
    `#  ` continuation lines."""
    lines, found, i = block.splitlines(), [], 0
    while i < len(lines):
        if not lines[i].strip() or lines[i].startswith("#"):
            i += 1
            continue
        command = [lines[i]]
        while command[-1].endswith("\\"):
            i += 1
            command.append(lines[i])
        i += 1
        expected = None
        if i < len(lines) and lines[i].startswith("# {"):
            expected = lines[i][2:]
            i += 1
            while i < len(lines) and lines[i].startswith("#  "):
                expected += " " + lines[i][3:]
                i += 1
        found.append(("\n".join(command), expected))
    return found


def expectation(text: str):
    """The README's notation as JSON: `...` becomes a "..." key."""
    text = text.replace("{...}", '{"...": true}').replace(", ...}", ', "...": true}')
    return json.loads(text)


def agrees(expected, actual, seen: dict) -> bool:
    if isinstance(expected, str) and re.fullmatch(r"<[^<>]+>", expected):
        if expected.startswith("<same "):
            return actual == seen.get(expected.replace("<same ", "<"))
        seen[expected] = actual
        return isinstance(actual, str)
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return False
        keys = set(expected) - {"..."}
        if "..." not in expected and keys != set(actual):
            return False
        return keys <= set(actual) and all(agrees(expected[k], actual[k], seen) for k in keys)
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(agrees(e, a, seen) for e, a in zip(expected, actual, strict=True))
        )
    return expected == actual


def run(script: str, url: str) -> str:
    done = subprocess.run(
        ["bash", "-c", script.replace("localhost:8080", url)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_readme_has_examples_to_check():
    assert len(blocks()) >= 3
    assert sum(expected is not None for b in blocks() for _, expected in steps(b)) >= 10


def settle(live):
    """Wait, as a person reading along would, until the worker has run what is due."""
    busy = "SELECT COUNT(*) FROM events_execution WHERE status IN ('queued', 'running')"
    live.wait_for(lambda: live.query(busy)[0][0] == 0, timeout=20)


def test_every_readme_example_answers_what_the_readme_says(live):
    url = live.url.removeprefix("http://")
    checked = 0
    for block in blocks():
        prelude, seen = "", {}
        for command, expected in steps(block):
            if re.match(r"^[A-Z_]+=", command):  # BODY=..., SIG=...: for the steps after
                prelude += command + "\n"
                continue
            if expected is None:
                run(prelude + command, url)
                settle(live)
                continue
            want = expectation(expected)
            # A GET may run again (the worker may not have run an event yet); a POST once.
            deadline = time.monotonic() + (10 if "-X POST" not in command else 0)
            while True:
                answer = json.loads(run(prelude + command, url))
                if agrees(want, answer, dict(seen)) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert agrees(want, answer, seen), (command, answer)
            checked += 1
            settle(live)
    assert checked >= 10
