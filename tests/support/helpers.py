"""What many test modules share: sending an event the way a sender does, and reading
errors."""

import json


def post(client, body, *, key=None, content_type="application/json", **headers):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    if key is not None:
        headers["HTTP_X_API_KEY"] = key
    if not data:
        # The test client drops the content type of an empty body; a real client would not.
        headers.setdefault("CONTENT_TYPE", content_type)
    return client.post("/webhook", data=data, content_type=content_type, **headers)


def error_code(response):
    body = response.json()
    assert body["status"] == "error"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]["code"]


ORDER = {"event_id": "evt_1", "type": "order.created", "data": {"total": 42}}
