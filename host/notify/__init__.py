"""Outbound notifications: subscriptions, the outbox written with run state changes, and the
notifier role that delivers it through channels (webhooks/outbound)."""
