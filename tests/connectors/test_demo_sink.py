"""The README's connectors "Try it", as written: the demo sink, the example route, the
sample event, a 503 and the retry with the same Idempotency-Key."""

import json
import re
import subprocess
import sys

import pytest
import requests

from tests.support.live import ROOT, LiveRuntime, demo_sink, free_port, load_example

pytestmark = pytest.mark.live


def test_the_demo_sink_gets_a_503_then_the_retry_with_the_same_key(tmp_path):
    port = free_port()
    rt = LiveRuntime(tmp_path).prepare()
    rt.env.update(OUTBOUND_HOSTS="127.0.0.1", OUTBOUND_ALLOW_PRIVATE="127.0.0.1")
    with demo_sink(tmp_path, port, fail_first=1) as sink_log:
        try:
            # The README's fixture, with this test's port in place of 9000.
            fixture = load_example(rt, tmp_path, "sink_route.json", port)
            assert "http://127.0.0.1:9000/hook" in fixture
            rt.start()

            sample = (ROOT / "examples" / "sample_webhook.json").read_bytes()
            assert rt.post_event(sample).status_code == 202

            def answered():
                sink_log.flush()
                sink_log.seek(0)
                return re.findall(
                    r"#\d+ POST /hook Idempotency-Key: (\S+) -> (\d+)", sink_log.read()
                )

            calls = rt.wait_for(lambda: len(answered()) >= 2 and answered(), timeout=30)
            (first_key, first), (second_key, second) = calls[:2]
            assert (first, second) == ("503", "200")
            assert first_key == second_key != "-"
            sink_log.seek(0)
            assert json.dumps({"order": "ord_1001"}) in sink_log.read()
            assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
        finally:
            rt.close()


def test_the_demo_sink_refuses_a_port_it_cannot_use():
    done = subprocess.run(
        [sys.executable, "manage.py", "demo_sink", "--port", "70000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "ENV_FILE": ""},
    )
    assert done.returncode == 1
    assert "--port 70000: give a port from 1 to 65535." in done.stderr
