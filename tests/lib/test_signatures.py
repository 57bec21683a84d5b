"""Webhook signature schemes (lib/signatures.py): providers' published examples first, then
our own signing, the clock, missing and malformed headers, rotation, and hostile input."""

import base64
import contextlib
import hashlib
import hmac
import random

import pytest
from django.http.request import HttpHeaders

from lib.signatures import (
    BODY_ONLY,
    DEFAULT_TOLERANCE,
    PROVIDER_ISSUED,
    SCHEMES,
    SignatureRejected,
    check_secret,
    generate_secret,
    sign,
    verify,
)

TIMED = ("standard_webhooks", "stripe", "slack")
UNTIMED = ("github", "shopify")
T0 = 1_700_000_000
BODY = b'{"id": "evt_1", "type": "order.created", "total": 42}'


def rejected(scheme, secrets, headers, body, **kwargs) -> str:
    """The reason verify gives; fails the test if it accepts or raises anything else."""
    with pytest.raises(SignatureRejected) as info:
        verify(scheme, secrets, headers, body, **kwargs)
    return info.value.reason


def signed(scheme, secret, body=BODY, timestamp=T0, **kwargs):
    return sign(scheme, secret, body, timestamp=timestamp, **kwargs)


# --- The providers' published examples ----------------------------------------------------

# GitHub docs, "Validating webhook deliveries" > "Testing the webhook payload validation":
# https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
# (github/docs, content/webhooks/using-webhooks/validating-webhook-deliveries.md)
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_HEADERS = {
    "X-Hub-Signature-256": (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )
}

# Slack docs, "Verifying requests from Slack" (the walk-through with a slash command), also
# pinned in slackapi/python-slack-sdk, tests/slack_sdk/signature/test_signature_verifier.py:
# https://docs.slack.dev/authentication/verifying-requests-from-slack/
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TIMESTAMP = 1531420618
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
    b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
    b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands"
    b"%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_HEADERS = {
    "X-Slack-Request-Timestamp": "1531420618",
    "X-Slack-Signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
}

# Standard Webhooks reference library, standard-webhooks/standard-webhooks,
# libraries/python/tests/test_webhooks.py (test_sign_function; the same vector is in the svix
# libraries' tests).
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STANDARD_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
STANDARD_TIMESTAMP = 1614265330
STANDARD_BODY = b'{"test": 2432232314}'
STANDARD_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
STANDARD_HEADERS = {
    "webhook-id": STANDARD_ID,
    "webhook-timestamp": str(STANDARD_TIMESTAMP),
    "webhook-signature": STANDARD_SIGNATURE,
}

# Stripe's docs print only an example header (t=1492774577,v1=5257a8...), without the secret
# or body behind it. This complete triple is the fixture of Stripe's official .NET library:
# stripe/stripe-dotnet, src/StripeTests/Services/Events/EventUtilityTest.cs (secret,
# timestamp, header with its fake v0) over src/StripeTests/Resources/event_test_signature.json
# (the body below, byte for byte, trailing newline included).
STRIPE_SECRET = "webhook_secret"
STRIPE_TIMESTAMP = 1533204620
STRIPE_BODY = b"""{
  "id": "evt_123",
  "object": "event",
  "account": "acct_123",
  "api_version": "2017-05-25",
  "created": 1533204620,
  "data": {
    "object": {
      "id": "cus_123",
      "object": "customer",
      "created": 123456789,
      "email": "test@stripe.com",
      "livemode": false,
      "metadata": {}
    }
  },
  "livemode": false,
  "pending_webhooks": 1,
  "request": {
    "id": "req_123",
    "idempotency_key": "idempotency-key-123"
  },
  "type": "customer.created"
}
"""
STRIPE_HEADERS = {
    "Stripe-Signature": (
        "t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7,"
        "v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef"
    )
}

# Shopify's docs show how to compute X-Shopify-Hmac-Sha256 but print no values. This pair is
# from Shopify's official Rails gem: Shopify/shopify_app,
# test/shopify_app/controller_concerns/webhook_verification_test.rb, where the test posts
# params {foo: "anything"} (a form-encoded body "foo=anything") with secret "secret" and, for
# the rotation case, old_secret "old_secret".
SHOPIFY_SECRET = "secret"
SHOPIFY_OLD_SECRET = "old_secret"
SHOPIFY_BODY = b"foo=anything"
SHOPIFY_HEADERS = {"X-Shopify-Hmac-Sha256": "yCGX/RrK4fcuNtr3ztk5tQGsOBjcAzHpGLdMUrbV8yI="}
SHOPIFY_OLD_HEADERS = {"X-Shopify-Hmac-Sha256": "XqRcjrSv57VACn6apEO9znyu/wkN1VC7QxdSPwK3Hzs="}

PUBLISHED = {
    "github": (GITHUB_SECRET, GITHUB_HEADERS, GITHUB_BODY, None),
    "slack": (SLACK_SECRET, SLACK_HEADERS, SLACK_BODY, SLACK_TIMESTAMP),
    "standard_webhooks": (STANDARD_SECRET, STANDARD_HEADERS, STANDARD_BODY, STANDARD_TIMESTAMP),
    "stripe": (STRIPE_SECRET, STRIPE_HEADERS, STRIPE_BODY, STRIPE_TIMESTAMP),
    "shopify": (SHOPIFY_SECRET, SHOPIFY_HEADERS, SHOPIFY_BODY, None),
}


def test_every_scheme_has_a_published_example():
    assert set(PUBLISHED) == set(SCHEMES)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_providers_published_example_verifies(scheme):
    secret, headers, body, timestamp = PUBLISHED[scheme]
    now = timestamp if timestamp is not None else T0
    assert verify(scheme, [secret], headers, body, now=now) == 0
    check_secret(scheme, secret)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_our_signer_reproduces_the_published_signature(scheme):
    secret, headers, body, timestamp = PUBLISHED[scheme]
    ours = sign(scheme, secret, body, timestamp=timestamp, msg_id=STANDARD_ID)
    if scheme == "stripe":
        # Stripe's header also carries a fake v0 for test events; ours sends only t and v1.
        assert headers["Stripe-Signature"].startswith(ours["Stripe-Signature"] + ",v0=")
    else:
        assert ours == headers


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_published_example_with_one_byte_changed_is_refused(scheme):
    secret, headers, body, timestamp = PUBLISHED[scheme]
    now = timestamp if timestamp is not None else T0
    changed = body[:-1] + bytes([body[-1] ^ 1])
    assert rejected(scheme, [secret], headers, changed, now=now) == "bad_signature"


def test_shopify_published_rotation_pair():
    # shopify_app's old_secret case: signed with the old secret, still accepted during rotation.
    both = [SHOPIFY_OLD_SECRET, SHOPIFY_SECRET]
    assert verify("shopify", both, SHOPIFY_OLD_HEADERS, SHOPIFY_BODY) == 0
    assert verify("shopify", both, SHOPIFY_HEADERS, SHOPIFY_BODY) == 1
    assert rejected("shopify", [SHOPIFY_SECRET], SHOPIFY_OLD_HEADERS, SHOPIFY_BODY) == (
        "bad_signature"
    )


def verify_standard_example(secrets, signature=STANDARD_SIGNATURE):
    headers = dict(STANDARD_HEADERS, **{"webhook-signature": signature})
    return verify("standard_webhooks", secrets, headers, STANDARD_BODY, now=STANDARD_TIMESTAMP)


def test_standard_webhooks_published_negative_and_multi_signature_cases():
    # The same library test file. test_invalid_signature_raises_error (last character changed):
    with pytest.raises(SignatureRejected) as info:
        verify_standard_example(
            [STANDARD_SECRET], "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
        )
    assert info.value.reason == "bad_signature"
    # test_multi_sig_payload_is_valid: decoys around the real one, a v2 among them.
    decoy = "Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    several = f"v1,{decoy} v2,{decoy} {STANDARD_SIGNATURE} v1,{decoy}"
    assert verify_standard_example([STANDARD_SECRET], several) == 0


def test_standard_webhooks_secret_without_prefix_works_as_the_library_allows():
    assert verify_standard_example([STANDARD_SECRET.removeprefix("whsec_")]) == 0


def svix_named(headers):
    """The same headers under Svix's default (not white-labelled) names."""
    return {name.replace("webhook-", "svix-"): value for name, value in headers.items()}


def test_standard_webhooks_accepts_svixs_header_names():
    # The published vector, sent as Svix sends it by default.
    headers = svix_named(STANDARD_HEADERS)
    assert (
        verify(
            "standard_webhooks", [STANDARD_SECRET], headers, STANDARD_BODY, now=STANDARD_TIMESTAMP
        )
        == 0
    )
    upper = {name.upper(): value for name, value in headers.items()}
    assert (
        verify(
            "standard_webhooks", [STANDARD_SECRET], upper, STANDARD_BODY, now=STANDARD_TIMESTAMP
        )
        == 0
    )


def test_both_header_sets_saying_the_same_are_accepted():
    headers = {**STANDARD_HEADERS, **svix_named(STANDARD_HEADERS)}
    headers["svix-id"] = f"  {STANDARD_ID} "  # the same value, spaced as HTTP allows
    assert (
        verify(
            "standard_webhooks", [STANDARD_SECRET], headers, STANDARD_BODY, now=STANDARD_TIMESTAMP
        )
        == 0
    )


@pytest.mark.parametrize(
    "change",
    [
        {"svix-id": "msg_other"},
        {"svix-timestamp": str(STANDARD_TIMESTAMP + 1)},
        {"svix-signature": "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="},
        {"svix-timestamp": None},  # one set incomplete
    ],
    ids=["id", "timestamp", "signature", "incomplete"],
)
def test_both_header_sets_disagreeing_are_conflicting_headers(change):
    headers = {**STANDARD_HEADERS, **svix_named(STANDARD_HEADERS), **change}
    headers = {name: value for name, value in headers.items() if value is not None}
    assert rejected(
        "standard_webhooks", [STANDARD_SECRET], headers, STANDARD_BODY, now=STANDARD_TIMESTAMP
    ) == ("conflicting_headers")


def test_one_svix_header_alone_is_missing_the_others():
    headers = {"svix-id": STANDARD_ID}
    assert rejected("standard_webhooks", [STANDARD_SECRET], headers, STANDARD_BODY) == (
        "missing_header"
    )


def test_the_stripe_fixture_is_refused_once_outside_its_tolerance():
    # EventUtilityTest.RejectOutdatedTimestamp: now = t + tolerance + 100.
    now = STRIPE_TIMESTAMP + 300 + 100
    assert rejected("stripe", [STRIPE_SECRET], STRIPE_HEADERS, STRIPE_BODY, now=now) == (
        "stale_timestamp"
    )


def test_headers_from_a_django_request_work():
    meta = {"HTTP_X_SLACK_REQUEST_TIMESTAMP": "1531420618"}
    meta["HTTP_X_SLACK_SIGNATURE"] = SLACK_HEADERS["X-Slack-Signature"]
    assert verify("slack", [SLACK_SECRET], HttpHeaders(meta), SLACK_BODY, now=SLACK_TIMESTAMP) == 0


# --- Our own signatures, per scheme -------------------------------------------------------


@pytest.fixture(params=SCHEMES)
def scheme(request):
    return request.param


@pytest.fixture
def secret(scheme):
    return generate_secret(scheme)


def test_sign_round_trips_through_verify(scheme, secret):
    assert verify(scheme, [secret], signed(scheme, secret), BODY, now=T0) == 0


def test_sign_defaults_to_now(scheme, secret):
    assert verify(scheme, [secret], sign(scheme, secret, BODY), BODY) == 0


def test_a_wrong_secret_is_a_bad_signature(scheme, secret):
    other = generate_secret(scheme)
    assert rejected(scheme, [other], signed(scheme, secret), BODY, now=T0) == "bad_signature"


@pytest.mark.parametrize("position", [0, len(BODY) // 2, len(BODY) - 1])
def test_a_body_changed_by_one_byte_is_a_bad_signature(scheme, secret, position):
    changed = bytearray(BODY)
    changed[position] ^= 0x20
    headers = signed(scheme, secret)
    assert rejected(scheme, [secret], headers, bytes(changed), now=T0) == "bad_signature"
    assert rejected(scheme, [secret], headers, BODY + b" ", now=T0) == "bad_signature"


def test_no_secrets_is_a_bad_signature(scheme, secret):
    assert rejected(scheme, [], signed(scheme, secret), BODY, now=T0) == "bad_signature"


def test_rotation_returns_the_index_of_the_secret_that_signed(scheme):
    old, new = generate_secret(scheme), generate_secret(scheme)
    assert verify(scheme, [old, new], signed(scheme, new), BODY, now=T0) == 1
    assert verify(scheme, [old, new], signed(scheme, old), BODY, now=T0) == 0
    assert verify(scheme, [new, old, new], signed(scheme, new), BODY, now=T0) == 0
    assert rejected(scheme, [new], signed(scheme, old), BODY, now=T0) == "bad_signature"


# An empty key cannot be written as a Standard Webhooks secret ("whsec_" is refused).
@pytest.mark.parametrize("scheme", ["github", "stripe", "shopify", "slack"])
def test_a_blank_secret_never_matches_even_a_signature_made_with_it(scheme):
    headers = signed(scheme, "")
    assert rejected(scheme, ["", "  "], headers, BODY, now=T0) == "bad_signature"
    real = generate_secret(scheme)
    assert verify(scheme, ["", real], signed(scheme, real), BODY, now=T0) == 1


def test_header_names_are_case_insensitive(scheme, secret):
    headers = signed(scheme, secret)
    for change in (str.lower, str.upper, str.title):
        changed = {change(name): value for name, value in headers.items()}
        assert verify(scheme, [secret], changed, BODY, now=T0) == 0


def test_bodies_are_bytes_not_text(scheme, secret):
    body = b"\xff\xfe not UTF-8 \x00"
    if scheme == "standard_webhooks":
        # The library signs text: bytes that are not UTF-8 cannot carry a valid signature.
        headers = signed(scheme, secret, body=b"x")
        assert rejected(scheme, [secret], headers, body, now=T0) == "bad_signature"
    else:
        assert verify(scheme, [secret], signed(scheme, secret, body=body), body, now=T0) == 0


def test_an_empty_body_can_be_signed(scheme, secret):
    assert verify(scheme, [secret], signed(scheme, secret, body=b""), b"", now=T0) == 0


# --- The clock ----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", TIMED)
@pytest.mark.parametrize(
    ("age", "reason"),
    [
        (DEFAULT_TOLERANCE + 1, "stale_timestamp"),
        (DEFAULT_TOLERANCE + 0.5, "stale_timestamp"),
        (DEFAULT_TOLERANCE, None),
        (0, None),
        (-DEFAULT_TOLERANCE, None),
        (-DEFAULT_TOLERANCE - 1, "future_timestamp"),
        (-(10**9), "future_timestamp"),
        (10**9, "stale_timestamp"),
    ],
)
def test_the_timestamp_must_be_within_tolerance_both_ways(scheme, age, reason):
    secret = generate_secret(scheme)
    headers = signed(scheme, secret)
    if reason is None:
        assert verify(scheme, [secret], headers, BODY, now=T0 + age) == 0
    else:
        assert rejected(scheme, [secret], headers, BODY, now=T0 + age) == reason


@pytest.mark.parametrize("scheme", TIMED)
def test_the_tolerance_can_be_changed(scheme):
    secret = generate_secret(scheme)
    headers = signed(scheme, secret)
    assert verify(scheme, [secret], headers, BODY, now=T0 + 10, tolerance=10) == 0
    assert rejected(scheme, [secret], headers, BODY, now=T0 + 11, tolerance=10) == (
        "stale_timestamp"
    )
    assert rejected(scheme, [secret], headers, BODY, now=T0 - 11, tolerance=10) == (
        "future_timestamp"
    )


@pytest.mark.parametrize("scheme", TIMED)
def test_the_clock_is_checked_before_the_signature(scheme):
    headers = signed(scheme, generate_secret(scheme))
    wrong = generate_secret(scheme)
    assert rejected(scheme, [wrong], headers, BODY, now=T0 + 3600) == "stale_timestamp"
    assert rejected(scheme, [wrong], headers, BODY, now=T0 - 3600) == "future_timestamp"


@pytest.mark.parametrize("scheme", UNTIMED)
def test_schemes_without_a_timestamp_ignore_the_clock(scheme):
    secret = generate_secret(scheme)
    headers = signed(scheme, secret)
    assert verify(scheme, [secret], headers, BODY, now=T0 + 10**9) == 0
    assert verify(scheme, [secret], headers, BODY, now=0) == 0


def test_the_default_now_is_the_wall_clock():
    secret = generate_secret("stripe")
    old = signed("stripe", secret, timestamp=T0 - 10**6)
    assert rejected("stripe", [secret], old, BODY) == "stale_timestamp"


# --- Missing headers ----------------------------------------------------------------------


def test_each_missing_header_is_missing_header(scheme, secret):
    headers = signed(scheme, secret)
    for name in headers:
        without = {key: value for key, value in headers.items() if key != name}
        assert rejected(scheme, [secret], without, BODY, now=T0) == "missing_header", name
        for blank in ("", "   ", "\t"):
            emptied = dict(headers, **{name: blank})
            assert rejected(scheme, [secret], emptied, BODY, now=T0) == "missing_header", name
    assert rejected(scheme, [secret], {}, BODY, now=T0) == "missing_header"


def test_github_only_counts_the_sha256_header():
    sha1 = hmac.new(GITHUB_SECRET.encode(), GITHUB_BODY, hashlib.sha1).hexdigest()
    headers = {"X-Hub-Signature": "sha1=" + sha1}
    assert rejected("github", [GITHUB_SECRET], headers, GITHUB_BODY) == "missing_header"
    headers["X-Hub-Signature"] = "sha1=0000"  # a wrong sha1 next to a right sha256 is ignored
    headers.update(GITHUB_HEADERS)
    assert verify("github", [GITHUB_SECRET], headers, GITHUB_BODY) == 0


def test_missing_is_reported_before_malformed():
    headers = {"X-Slack-Signature": "garbage"}
    assert rejected("slack", [SLACK_SECRET], headers, SLACK_BODY) == "missing_header"
    headers = {"webhook-id": "é", "webhook-signature": "garbage"}
    assert rejected("standard_webhooks", [STANDARD_SECRET], headers, b"") == "missing_header"


# --- Malformed headers --------------------------------------------------------------------

HEX = "ab" * 32
B64 = base64.b64encode(bytes(32)).decode()

MALFORMED = {
    "github": [
        ("X-Hub-Signature-256", HEX),  # no algorithm
        ("X-Hub-Signature-256", "sha1=" + HEX[:40]),
        ("X-Hub-Signature-256", "SHA256=" + HEX),
        ("X-Hub-Signature-256", "sha256=" + HEX[:-1]),
        ("X-Hub-Signature-256", "sha256=" + HEX + "00"),
        ("X-Hub-Signature-256", "sha256=" + "zz" * 32),
        ("X-Hub-Signature-256", "sha256=" + "ab " * 32),  # bytes.fromhex would allow this
        ("X-Hub-Signature-256", "sha256=" + B64),
        ("X-Hub-Signature-256", "sha256=" + HEX + "\x00"),
    ],
    "shopify": [
        ("X-Shopify-Hmac-Sha256", HEX),
        ("X-Shopify-Hmac-Sha256", B64[:-1]),  # bad padding
        ("X-Shopify-Hmac-Sha256", B64.rstrip("=")),
        ("X-Shopify-Hmac-Sha256", "!!" + B64[2:]),
        ("X-Shopify-Hmac-Sha256", base64.b64encode(bytes(31)).decode()),
        ("X-Shopify-Hmac-Sha256", base64.urlsafe_b64encode(b"\xff" * 32).decode()),
    ],
    "stripe": [
        ("Stripe-Signature", "bad_header"),
        ("Stripe-Signature", "i'm not even a real signature header"),  # stripe-python's case
        ("Stripe-Signature", f"v1={HEX}"),  # no t
        ("Stripe-Signature", f"t={T0}"),  # no v1
        ("Stripe-Signature", f"t={T0},v0={HEX}"),  # only the fake scheme
        ("Stripe-Signature", f"t={T0},v1=bad_signature"),
        ("Stripe-Signature", f"t={T0},t={T0},v1={HEX}"),  # which t was signed?
        ("Stripe-Signature", f"t=,v1={HEX}"),
        ("Stripe-Signature", f"t=-{T0},v1={HEX}"),
        ("Stripe-Signature", f"t={T0}.5,v1={HEX}"),
        ("Stripe-Signature", f"t=nan,v1={HEX}"),
        ("Stripe-Signature", f"t=1e9,v1={HEX}"),
        ("Stripe-Signature", f"t={'9' * 16},v1={HEX}"),
        ("Stripe-Signature", f"t=٣٤,v1={HEX}"),  # digits, but not ASCII ones
    ],
    "slack": [
        ("X-Slack-Signature", HEX),
        ("X-Slack-Signature", "v1=" + HEX),
        ("X-Slack-Signature", "v0=" + HEX[:-2]),
        ("X-Slack-Signature", "v0=" + B64),
        ("X-Slack-Request-Timestamp", "soon"),
        ("X-Slack-Request-Timestamp", f"{T0}.0"),
        ("X-Slack-Request-Timestamp", f"+{T0}"),
        ("X-Slack-Request-Timestamp", "inf"),
        ("X-Slack-Request-Timestamp", "9" * 400),
    ],
    "standard_webhooks": [
        ("webhook-signature", "v1"),
        ("webhook-signature", "v1," + HEX),
        ("webhook-signature", "v1," + B64[:-1]),
        ("webhook-signature", "v1a," + B64),  # asymmetric: not ours to check
        ("webhook-signature", "v2," + B64),
        ("webhook-signature", "v1=" + B64),
        ("webhook-signature", B64),
        ("webhook-timestamp", "hello"),  # the library's own test
        ("webhook-timestamp", f"{T0}.000"),
        ("webhook-timestamp", "-1"),
        ("webhook-timestamp", "NaN"),
        ("webhook-timestamp", "1e309"),
        ("webhook-timestamp", "0x6553f100"),
        ("webhook-timestamp", "1_700_000_000"),
        ("webhook-id", "msg_é"),
        ("webhook-id", "msg\x00"),
    ],
}


def test_every_scheme_has_malformed_cases():
    assert set(MALFORMED) == set(SCHEMES)


@pytest.mark.parametrize(
    ("scheme", "name", "value"),
    [(scheme, name, value) for scheme, cases in MALFORMED.items() for name, value in cases],
)
def test_malformed_headers_are_malformed_header(scheme, name, value):
    secret = generate_secret(scheme)
    headers = dict(signed(scheme, secret), **{name: value})
    assert rejected(scheme, [secret], headers, BODY, now=T0) == "malformed_header"


def test_a_well_formed_signature_that_does_not_match_is_a_bad_signature(scheme, secret):
    headers = signed(scheme, secret)
    forged = {
        "github": {"X-Hub-Signature-256": "sha256=" + HEX},
        "shopify": {"X-Shopify-Hmac-Sha256": B64},
        "stripe": {"Stripe-Signature": f"t={T0},v1={HEX}"},
        "slack": {"X-Slack-Signature": "v0=" + HEX},
        "standard_webhooks": {"webhook-signature": "v1," + B64},
    }[scheme]
    assert rejected(scheme, [secret], dict(headers, **forged), BODY, now=T0) == "bad_signature"


def test_upper_case_hex_is_accepted():
    digest = GITHUB_HEADERS["X-Hub-Signature-256"].removeprefix("sha256=")
    headers = {"X-Hub-Signature-256": "sha256=" + digest.upper()}
    assert verify("github", [GITHUB_SECRET], headers, GITHUB_BODY) == 0


# --- Several signatures in one header -----------------------------------------------------


def test_standard_webhooks_several_signatures_one_matching():
    secret = generate_secret("standard_webhooks")
    headers = signed("standard_webhooks", secret, msg_id="msg_1")
    good = headers["webhook-signature"]
    other = signed("standard_webhooks", generate_secret("standard_webhooks"), msg_id="msg_1")
    for value in (
        f"{other['webhook-signature']} {good}",
        f"{good} {other['webhook-signature']}",
        f"v1a,{B64} garbage v1,!!! {good} v2,{B64}",
        f"  {good}  ",
        f"\t{other['webhook-signature']}   {good}\t",
        f"{other['webhook-signature']}\t{good}",
    ):
        headers["webhook-signature"] = value
        assert verify("standard_webhooks", [secret], headers, BODY, now=T0) == 0, value


def test_stripe_several_signatures_any_order_one_matching():
    secret = generate_secret("stripe")
    v1 = signed("stripe", secret)["Stripe-Signature"].split(",")[1]
    for value in (
        f"t={T0},v1={HEX},{v1}",
        f"{v1},t={T0}",
        f"v0={HEX},{v1},v1={HEX},t={T0}",
        f"t={T0},x=y,garbage,{v1},v2=zzz,=,,",
        f" t = {T0} , {v1} ",
        f"t={T0},v1=bad_signature,{v1}",
    ):
        headers = {"Stripe-Signature": value}
        assert verify("stripe", [secret], headers, BODY, now=T0) == 0, value


def test_rotation_signatures_in_one_header_match_either_secret():
    # During a rotation a sender signs with both secrets; either configured secret suffices.
    old, new = generate_secret("standard_webhooks"), generate_secret("standard_webhooks")
    a = signed("standard_webhooks", old, msg_id="msg_1")
    b = signed("standard_webhooks", new, msg_id="msg_1")
    headers = dict(
        a, **{"webhook-signature": f"{a['webhook-signature']} {b['webhook-signature']}"}
    )
    assert verify("standard_webhooks", [new], headers, BODY, now=T0) == 0
    assert verify("standard_webhooks", [old], headers, BODY, now=T0) == 0


@pytest.mark.parametrize(("position", "accepted"), [(1, True), (20, True), (21, False)])
def test_only_the_first_20_signatures_are_considered(position, accepted):
    secret = generate_secret("standard_webhooks")
    headers = signed("standard_webhooks", secret)
    decoys = [f"v1,{B64}"] * 30
    decoys.insert(position - 1, headers["webhook-signature"])
    headers["webhook-signature"] = " ".join(decoys)
    stripe_secret = generate_secret("stripe")
    v1 = signed("stripe", stripe_secret)["Stripe-Signature"].split(",")[1]
    items = [f"v1={HEX}"] * 30
    items.insert(position - 1, v1)
    stripe_headers = {"Stripe-Signature": ",".join([*items, f"t={T0}"])}
    if accepted:
        assert verify("standard_webhooks", [secret], headers, BODY, now=T0) == 0
        assert verify("stripe", [stripe_secret], stripe_headers, BODY, now=T0) == 0
    else:
        assert rejected("standard_webhooks", [secret], headers, BODY, now=T0) == "bad_signature"
        assert rejected("stripe", [stripe_secret], stripe_headers, BODY, now=T0) == "bad_signature"


def test_thousands_of_signatures_are_cheap_and_refused():
    secret = generate_secret("standard_webhooks")
    headers = signed("standard_webhooks", secret)
    headers["webhook-signature"] = " ".join(
        [f"v1,{B64}"] * 10_000 + [headers["webhook-signature"]]
    )
    assert rejected("standard_webhooks", [secret] * 50, headers, BODY, now=T0) == "bad_signature"


# --- Hostile input ------------------------------------------------------------------------

HOSTILE = [
    "",
    " ",
    "\x00",
    "é",
    "☃" * 1000,
    "\ud800",  # a lone surrogate
    "\r\nX-Injected: 1",
    "t=nan",
    "t=inf,v1=" + HEX,
    "t=1e309,v1=" + HEX,
    "t=-1e309",
    "t=" + "9" * 5000 + ",v1=" + HEX,
    "t=" + "1" * 15 + ",v1=" + HEX,
    "t=0,v1=" + HEX,
    "nan",
    "-inf",
    "1e309",
    "1" * 5000,
    "-1",
    "0",
    "1.5",
    "v1," + "!" * 44,
    "v1,====",
    "v1,=",
    "v1,",
    ",",
    "=",
    "sha256=",
    "sha256=" + "g" * 64,
    "v0=" + "\u00e9" * 64,
    "%%%%",
    "A" * 100_000,
    "v1," + B64 + " " + "v1,x " * 10_000,
    ",".join(["v1=" + HEX] * 10_000),
    ",".join(["t=1"] * 10_000),
    " ".join(["v1a,abc"] * 10_000),
    "sha256=" + HEX + "," * 10_000,
]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_hostile_header_values_only_ever_raise_signature_rejected(scheme):
    secret, other = generate_secret(scheme), generate_secret(scheme)
    good = signed(scheme, secret)
    for name in good:
        for value in HOSTILE:
            headers = dict(good, **{name: value})
            for body in (BODY, b"", b"\xff\xfe\x00", b"\x80" * 1000):
                rejected(scheme, [other, secret], headers, body, now=T0)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_random_header_values_only_ever_raise_signature_rejected(scheme):
    rng = random.Random(f"signatures-{scheme}")
    secret = generate_secret(scheme)
    good = signed(scheme, secret)
    alphabet = "0123456789abcdefABCDEF=,. +/-_tvsha\t\x00é☃\ud800"
    for _ in range(500):
        name = rng.choice(list(good))
        original = good[name]
        if rng.random() < 0.5:
            # Mutate a real value a little: those are the inputs nearest to passing.
            chars = list(original)
            for _ in range(rng.randint(1, 3)):
                chars[rng.randrange(len(chars))] = rng.choice(alphabet)
            value = "".join(chars)
        else:
            value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        if value == original:
            continue
        headers = dict(good, **{name: value})
        # Accepting is possible: a spelling of the same digest (hex in upper case, base64 with
        # other unused low bits in its last character) is the same signature.
        with contextlib.suppress(SignatureRejected):
            assert verify(scheme, [secret], headers, BODY, now=T0) == 0


def test_odd_header_mappings_are_refused_not_crashed():
    assert rejected("github", ["s"], {"X-Hub-Signature-256": None}, BODY) == "missing_header"
    assert rejected("github", ["s"], {"X-Hub-Signature-256": b"sha256="}, BODY) == (
        "malformed_header"
    )
    assert rejected("github", ["s"], {1: "x", None: "y"}, BODY) == "missing_header"


# --- Mistakes by the caller (not by the request) ------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: verify("svix", ["s"], {}, BODY),
        lambda: sign("svix", "s", BODY),
        lambda: generate_secret("svix"),
        lambda: check_secret("svix", "s"),
    ],
)
def test_an_unknown_scheme_is_a_value_error(call):
    with pytest.raises(ValueError, match="unknown signature scheme"):
        call()


def test_one_string_instead_of_a_list_of_secrets_is_a_value_error():
    with pytest.raises(ValueError, match="sequence of strings"):
        verify("github", GITHUB_SECRET, GITHUB_HEADERS, GITHUB_BODY)


def test_an_undecodable_standard_webhooks_secret_is_a_value_error():
    with pytest.raises(ValueError, match="standard_webhooks secret"):
        verify_standard_example(["whsec_"])


def test_signature_rejected_carries_its_reason():
    error = SignatureRejected("bad_signature")
    assert error.reason == "bad_signature"
    assert str(error) == "bad_signature"


def test_the_scheme_constants():
    assert SCHEMES == ("standard_webhooks", "github", "stripe", "shopify", "slack")
    assert frozenset({"stripe", "shopify", "slack"}) == PROVIDER_ISSUED
    assert frozenset({"github", "shopify"}) == BODY_ONLY
    assert DEFAULT_TOLERANCE == 300


# --- Secrets ------------------------------------------------------------------------------


def test_generated_secrets_pass_their_check_and_sign(scheme):
    secrets = {generate_secret(scheme) for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        check_secret(scheme, secret)
        assert verify(scheme, [secret], signed(scheme, secret), BODY, now=T0) == 0


def test_generated_secret_formats():
    standard = generate_secret("standard_webhooks")
    assert standard.startswith("whsec_")
    assert len(base64.b64decode(standard[6:], validate=True)) == 24
    for scheme in ("github", "stripe", "shopify", "slack"):
        value = generate_secret(scheme)
        assert len(value) == 64
        bytes.fromhex(value)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        " ",
        "\t\n",
        "a" * 501,
        "caf\u00e9-secret",
        "tab\tinside",
        "new\nline",
        "nul\x00",
        "\u2028",
    ],
)
def test_secrets_no_scheme_can_use(scheme, bad):
    with pytest.raises(ValueError) as info:
        check_secret(scheme, bad)
    assert str(info.value)


def test_secret_length_limit_is_500(scheme):
    if scheme == "standard_webhooks":
        fits = "whsec_" + base64.b64encode(bytes(369)).decode()  # 498 characters
        too_long = "whsec_" + base64.b64encode(bytes(372)).decode()  # 502
    else:
        fits, too_long = "x" * 500, "x" * 501
    check_secret(scheme, fits)
    with pytest.raises(ValueError, match="at most 500"):
        check_secret(scheme, too_long)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with"),  # no prefix
        ("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with"),
        ("whsec_", "at least 16"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "base64"),  # bad length
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!", "base64"),
        ("whsec_MfKQ9r8GKYqrTwjU PD8ILPZIo2LaLaSw", "base64"),
        ("whsec_MfKQ9r8GKYqrTwjU-D8ILPZIo2LaLaSw", "base64"),  # URL-safe alphabet
        ("whsec_" + base64.b64encode(bytes(17)).decode().rstrip("="), "base64"),  # unpadded
        ("whsec_AB==", "base64"),  # non-zero bits after the last byte: not canonical
        ("whsec_" + base64.b64encode(bytes(15)).decode(), "at least 16"),
    ],
)
def test_standard_webhooks_secrets_are_strictly_checked(bad, message):
    with pytest.raises(ValueError, match=message):
        check_secret("standard_webhooks", bad)


def test_standard_webhooks_secret_of_16_bytes_is_enough():
    check_secret("standard_webhooks", "whsec_" + base64.b64encode(bytes(16)).decode())


def test_provider_issued_secrets_of_any_printable_form_are_accepted():
    for scheme in PROVIDER_ISSUED:
        check_secret(scheme, "whsec_abc")  # Stripe's own form
        check_secret(scheme, "It's a Secret to Everybody")
