"""Consumers that feed channels from the app's own infrastructure (DESIGN Part 2,
docs/consumers.md): the PostgreSQL outbox (:mod:`.outbox`, schema in :mod:`.outbox_schema`) and
a RabbitMQ queue (:mod:`.amqp`), beside their shared base (:mod:`.base`).

:func:`.factory.create_consumers` builds the configured ones; a consumer's module (and its
client library) is imported only when its setting is set.
"""
