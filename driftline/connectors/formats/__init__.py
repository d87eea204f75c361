"""The message formats driftline reads (docs/events.md): JSON and Avro (raw or framed for the schema
registry, :mod:`~driftline.connectors.formats.codecs`; a batch at a time,
:mod:`~driftline.connectors.formats.avro_events`), the Open Inference Protocol's JSON and protobuf and
KServe's CloudEvents (:mod:`~driftline.connectors.formats.inference`,
:mod:`~driftline.connectors.formats.oip_protobuf`), and a consumed batch decoded whole
(:mod:`~driftline.connectors.formats.batch_decode`)."""
