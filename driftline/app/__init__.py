"""The application level: the ``driftline`` command (:mod:`~driftline.app.cli`), the wiring of the Kafka
service (:mod:`~driftline.app.run`) and of a replay of files (:mod:`~driftline.app.replay`), the demo and its
synthetic credit stream, and the CLI's output. Everything below it takes its parts as arguments."""
