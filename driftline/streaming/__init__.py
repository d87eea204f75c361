"""The Kafka service's composed parts (docs/service.md): the :class:`~driftline.streaming.loop.ConsumerLoop`
(poll, pause, backoff, checkpoint cadence, health), a :class:`~driftline.streaming.handler.BatchHandler`
per service shape (:mod:`~driftline.streaming.single_stage`, :mod:`~driftline.streaming.two_stage`),
the :class:`~driftline.streaming.offsets.OffsetTracker`, and :class:`~driftline.streaming.delivery.Delivery`,
the one place the delivery order (sinks → produce → flush → checkpoint → commit) is written."""
