"""Kafka on confluent-kafka (librdkafka): consuming (:mod:`~driftline.connectors.kafka.source`), producing
(:mod:`~driftline.connectors.kafka.publish`), fetching messages back by offset
(:mod:`~driftline.connectors.kafka.fetch`), topics checked or created (:mod:`~driftline.connectors.kafka.admin`),
each partition's state (:mod:`~driftline.connectors.kafka.partitions`) and librdkafka's log
(:mod:`~driftline.connectors.kafka.log`)."""
