"""Every piece of I/O: files, Kafka, ClickHouse, Prometheus, MLflow. Connectors depend on the engine,
never the reverse."""
