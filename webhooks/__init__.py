"""Webhooks both ways: inbound triggers (`webhooks.inbound`: signature schemes, payload
mapping, rate limits) and outbound notification channels (`webhooks.outbound`: the channel
contract, the signed webhook channel with its SSRF guard, the email channel).
"""
