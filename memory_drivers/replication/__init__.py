"""Replication's shared parts: the durable outbox of writes (:mod:`.outbox`)."""
