//! The Kafka backend through rdkafka (to be written).
