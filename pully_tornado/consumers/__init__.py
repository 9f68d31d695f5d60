"""Consumers that feed channels from the app's own infrastructure (DESIGN Part 2).

Only the PostgreSQL outbox schema (:mod:`.outbox_schema`) exists so far; the consuming loops
(PostgreSQL, RabbitMQ) are not built yet.
"""
