"""docs/workflows.md's worked example, as written: the demo sink, examples/workflows.json,
an order's three events, a refund; the ERP gets them in order, the invoice chain posts the
number the accounting API answered, and the refund waits for an operator's approval."""

import json
import re

import pytest

from tests.support.live import ROOT, LiveRuntime, demo_sink, free_port, load_example

pytestmark = pytest.mark.live

DOC = (ROOT / "docs" / "workflows.md").read_text()


def requests_seen(log) -> list[tuple[str, dict]]:
    """(path, JSON body) of each request the demo sink printed, in order."""
    log.flush()
    log.seek(0)
    seen = re.findall(r"#\d+ POST (\S+) Idempotency-Key: \S+ -> 200\n    (\{.*\})", log.read())
    return [(path, json.loads(body)) for path, body in seen]


def test_the_order_pipeline_runs_end_to_end_as_the_doc_says(tmp_path):
    assert "examples/workflows.json" in DOC and "--fail-first 0" in DOC
    port = free_port()
    rt = LiveRuntime(tmp_path).prepare()
    rt.env.update(OUTBOUND_HOSTS="127.0.0.1", OUTBOUND_ALLOW_PRIVATE="127.0.0.1")
    with demo_sink(tmp_path, port, fail_first=0) as log:
        try:
            load_example(rt, tmp_path, "workflows.json", port)
            rt.start()

            for step in ("created", "paid", "cancelled"):
                body = {
                    "event_id": f"evt_ord_7_{step}",
                    "type": f"order.{step}",
                    "data": {"order": {"id": "ord_7", "total": "42.00"}},
                }
                assert rt.post_event(body).status_code == 202
            refund = {
                "event_id": "evt_refund_7",
                "type": "refund.requested",
                "data": {"order": {"id": "ord_7"}, "amount": "42.00"},
            }
            assert rt.post_event(refund).status_code == 202

            def arrived(path, n):
                return lambda: len([b for p, b in requests_seen(log) if p == path]) >= n

            rt.wait_for(arrived("/erp", 3), timeout=30)
            rt.wait_for(arrived("/slack", 1), timeout=30)
            seen = requests_seen(log)
            erp = [body["event"] for path, body in seen if path == "/erp"]
            assert erp == ["order.created", "order.paid", "order.cancelled"], "in order"
            assert [b for p, b in seen if p == "/invoices"] == [
                {"order": "ord_7", "total": "42.00"}
            ]
            assert [b for p, b in seen if p == "/slack"] == [
                {"text": "Invoice INV-0001 for order ord_7"}
            ]
            follow = rt.query(
                "SELECT e.depth, s.name FROM events_event e JOIN events_source s "
                "ON s.id = e.source_id WHERE e.type = 'invoice.created'"
            )
            assert follow == [(1, "internal")]

            # The refund waits for an operator; approving it runs it.
            waiting = (
                "SELECT x.status FROM events_execution x JOIN connectors_route r "
                "ON r.id = x.route_id WHERE r.name = 'refund-customer'"
            )
            assert rt.query(waiting) == [("awaiting_approval",)]
            assert not arrived("/refunds", 1)()
            done = rt.manage(
                "approve", "--route", "refund-customer", "--reason", "customer called"
            )
            assert "1" in done.stdout
            rt.wait_for(arrived("/refunds", 1), timeout=30)
            assert rt.query(waiting) == [("succeeded",)]
        finally:
            rt.close()
