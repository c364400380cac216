"""The inbound signature schemes against signatures made by independent implementations (the
providers' documented examples, the Standard Webhooks and Stripe libraries, openssl), and the
payload mapping. The HTTP side is tested in tests/api/test_triggers_hooks.py."""

from __future__ import annotations

import ast
import base64
import hashlib
import inspect
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks
import stripe

from webhooks.inbound import mapping, schemes
from webhooks.inbound.schemes import Check, Rejected, verify

# GitHub's documented test values ("Validating webhook deliveries", docs.github.com).
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_PAYLOAD = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

# Generic HMAC known answers, recorded from OpenSSL 3.0:
#   printf '%s' '{"ref":"main","n":1}' | openssl dgst -sha256 -hmac 'generic-secret-1'
#   printf '%s' '1767225600.{"ref":"main","n":1}' \
#       | openssl dgst -sha256 -hmac 'generic-secret-1' -binary | base64
HMAC_SECRET = "generic-secret-1"
HMAC_BODY = b'{"ref":"main","n":1}'
HMAC_HEX = "ede5dfc56ea96926e9d49609d65fdc65812676197aa8522aa59a52a558580e0f"
HMAC_TS = 1767225600
HMAC_B64_WITH_TS = "eYa7zzhgT9KjapZVFnxb3mPtP7ChBE75bfwiKNeLLto="

STANDARD_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def check(*secrets: str, now: float | None = None, tolerance_s: int = 300, **options: object):
    return Check(list(secrets), tolerance_s, options, time.time() if now is None else now)


def test_github_documented_example() -> None:
    headers = {"X-Hub-Signature-256": GITHUB_SIGNATURE, "X-GitHub-Delivery": "d-1"}
    got = verify("github", check(GITHUB_SECRET), headers, GITHUB_PAYLOAD)
    assert got.delivery_id == "d-1"
    with pytest.raises(Rejected) as exc:
        verify("github", check(GITHUB_SECRET), headers, b"Hello, World?")
    assert exc.value.reason == "bad_signature"
    with pytest.raises(Rejected):
        verify("github", check("not the secret"), headers, GITHUB_PAYLOAD)
    # Rotation: the documented secret among others still verifies.
    assert verify("github", check("old-secret-x", GITHUB_SECRET), headers, GITHUB_PAYLOAD)


def test_standard_webhooks_library_signatures() -> None:
    now = datetime.now(UTC)
    body = '{"type":"user.created","data":{"id":7}}'
    sig = standardwebhooks.Webhook(STANDARD_SECRET).sign("msg_1", now, body)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": sig}  # fmt: skip
    got = verify("standard", check(STANDARD_SECRET), headers, body.encode())
    assert got.delivery_id == "msg_1"
    # The library agrees with itself on what we accept (the same headers verify there).
    assert standardwebhooks.Webhook(STANDARD_SECRET).verify(body, headers)["data"]["id"] == 7
    # Several signatures (sender rotating): one valid v1 among others is enough; v1a is not v1.
    bogus = "v1," + base64.b64encode(b"x" * 32).decode()
    multi = {**headers, "webhook-signature": f"{bogus} v1a,{sig[3:]} {sig}"}
    assert verify("standard", check(STANDARD_SECRET), multi, body.encode())
    only_v1a = {**headers, "webhook-signature": f"v1a,{sig[3:]}"}
    with pytest.raises(Rejected):
        verify("standard", check(STANDARD_SECRET), only_v1a, body.encode())


def test_standard_webhooks_timestamps_past_and_future() -> None:
    body = "{}"
    for skew, ok in ((-301, False), (301, False), (-299, True), (299, True)):
        when = datetime.fromtimestamp(time.time() + skew, UTC)
        sig = standardwebhooks.Webhook(STANDARD_SECRET).sign("m", when, body)
        headers = {"webhook-id": "m", "webhook-timestamp": str(int(when.timestamp())),
                   "webhook-signature": sig}  # fmt: skip
        if ok:
            assert verify("standard", check(STANDARD_SECRET), headers, body.encode())
        else:
            with pytest.raises(Rejected) as exc:
                verify("standard", check(STANDARD_SECRET), headers, body.encode())
            assert exc.value.reason == "stale_timestamp", skew


def test_stripe_library_signatures() -> None:
    secret = "whsec_stripe_test_secret"
    body = '{"id":"evt_123","type":"charge.succeeded"}'
    header = stripe.WebhookSignature.generate_signature_header(body, secret)
    stripe.WebhookSignature.verify_header(body, header, secret, tolerance=300)
    got = verify("stripe", check(secret), {"Stripe-Signature": header}, body.encode())
    assert got.delivery_id == "evt_123"
    old = stripe.WebhookSignature.generate_signature_header(body, secret, int(time.time()) - 301)
    with pytest.raises(Rejected) as exc:
        verify("stripe", check(secret), {"Stripe-Signature": old}, body.encode())
    assert exc.value.reason == "stale_timestamp"
    with pytest.raises(Rejected):
        verify("stripe", check("whsec_other"), {"Stripe-Signature": header}, body.encode())


def test_generic_hmac_openssl_known_answers() -> None:
    headers = {"X-Sig": "sha256=" + HMAC_HEX}
    got = verify("hmac", check(HMAC_SECRET, header="X-Sig", prefix="sha256="), headers, HMAC_BODY)
    assert got.delivery_id is not None and got.delivery_id.startswith("sha256:")
    with_ts = check(HMAC_SECRET, now=HMAC_TS + 10, header="X-Sig", encoding="base64",
                    timestamp_header="X-Ts", id_header="X-Id")  # fmt: skip
    headers = {"X-Sig": HMAC_B64_WITH_TS, "X-Ts": str(HMAC_TS), "X-Id": "gen-1"}
    assert verify("hmac", with_ts, headers, HMAC_BODY).delivery_id == "gen-1"
    late = check(HMAC_SECRET, now=HMAC_TS + 301, header="X-Sig", encoding="base64",
                 timestamp_header="X-Ts", id_header="X-Id")  # fmt: skip
    with pytest.raises(Rejected) as exc:
        verify("hmac", late, headers, HMAC_BODY)
    assert exc.value.reason == "stale_timestamp"


def test_signatures_are_compared_in_constant_time() -> None:
    """The only comparison of signature bytes is hmac.compare_digest, and no verifier compares
    with == or `in` on what it computed."""
    source = inspect.getsource(schemes)
    tree = ast.parse(source)
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert "hmac.compare_digest" in calls
    matcher = inspect.getsource(schemes._any_match)
    assert "hmac.compare_digest(got, want)" in matcher
    for name in ("_standard", "_github", "_stripe", "_generic"):
        body = ast.parse(inspect.getsource(getattr(schemes, name)).strip())
        compares = [n for n in ast.walk(body) if isinstance(n, ast.Compare)]
        for node in compares:
            text = ast.unparse(node)
            assert "expected" not in text and "given" not in text, f"{name}: {text}"
        assert "_any_match(" in ast.unparse(body), name


def test_mapping_pointers_and_templates() -> None:
    event = {"repository": {"full_name": "a/b"}, "commits": [{"id": "c1"}], "n": 3, "a/b": 1}
    template = {"repo": "{{/repository/full_name}}", "first": "{{ /commits/0/id }}",
                "n": "{{/n}}", "label": "push to {{/repository/full_name}} ({{/n}})",
                "slash": "{{/a~1b}}", "fixed": [1, True]}  # fmt: skip
    assert mapping.apply(template, event) == {
        "repo": "a/b", "first": "c1", "n": 3, "label": "push to a/b (3)", "slash": 1,
        "fixed": [1, True],
    }  # fmt: skip
    with pytest.raises(mapping.MappingError) as exc:
        mapping.apply({"x": {"y": "{{/missing}}"}}, event)
    assert [(e.path, e.message) for e in exc.value.errors] == [
        ("/mapping/x/y", "the event has nothing at /missing")
    ]
    assert mapping.check_template({"x": "{{ not a pointer }}"})[0].path == "/mapping/x"
    assert mapping.check_template({"x": "{{/ok}}"}) == []


def test_replay_keys_are_signed_whatever_id_the_sender_claims() -> None:
    """The delivery id is what the sender says (kept for the log); the replay key is covered by
    the signature: the signed id where the scheme signs one, else the signed content's hash."""
    gh = [verify("github", check(GITHUB_SECRET), {"X-Hub-Signature-256": GITHUB_SIGNATURE,
                 "X-GitHub-Delivery": d}, GITHUB_PAYLOAD) for d in ("d-1", "d-2")]  # fmt: skip
    assert [g.delivery_id for g in gh] == ["d-1", "d-2"]
    assert gh[0].replay_key == gh[1].replay_key == "sha256:" + hashlib.sha256(
        GITHUB_PAYLOAD).hexdigest()  # fmt: skip
    with_ts = check(HMAC_SECRET, now=HMAC_TS + 10, header="X-Sig", encoding="base64",
                    timestamp_header="X-Ts", id_header="X-Id")  # fmt: skip
    keys = {
        verify("hmac", with_ts, {"X-Sig": HMAC_B64_WITH_TS, "X-Ts": str(HMAC_TS), "X-Id": i},
               HMAC_BODY).replay_key
        for i in ("gen-1", "gen-2")
    }  # fmt: skip
    signed = f"{HMAC_TS}.".encode() + HMAC_BODY
    assert keys == {"sha256:" + hashlib.sha256(signed).hexdigest()}  # the timestamp is signed
    plain = verify("hmac", check(HMAC_SECRET, header="X-Sig", prefix="sha256=", id_header="X-Id"),
                   {"X-Sig": "sha256=" + HMAC_HEX, "X-Id": "a"}, HMAC_BODY)  # fmt: skip
    assert (plain.delivery_id, plain.replay_key) == (
        "a", "sha256:" + hashlib.sha256(HMAC_BODY).hexdigest())  # fmt: skip
    now = datetime.now(UTC)  # Standard Webhooks signs its id: it is the key
    body = "{}"
    sig = standardwebhooks.Webhook(STANDARD_SECRET).sign("msg_9", now, body)
    headers = {"webhook-id": "msg_9", "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": sig}  # fmt: skip
    assert verify("standard", check(STANDARD_SECRET), headers, body.encode()).replay_key == "msg_9"
    stripe_body = '{"id":"evt_9"}'  # Stripe signs the body, hence the event id in it
    header = stripe.WebhookSignature.generate_signature_header(stripe_body, "whsec_s")
    got = verify("stripe", check("whsec_s"), {"Stripe-Signature": header}, stripe_body.encode())
    assert got.replay_key == got.delivery_id == "evt_9"
