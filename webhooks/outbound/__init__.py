"""Outbound notifications: the channel contract, the bundled webhook and email channels, the
notifier that sends due deliveries from the PostgreSQL outbox."""
