"""Inbound webhooks: verifying a delivery's signature per scheme (Standard Webhooks, GitHub,
Stripe, generic HMAC) and turning its event into a job payload. Pure functions over bytes and
headers: the HTTP handler (host.api.hooks) owns the trigger lookup, the replay table and the
rate limit."""
