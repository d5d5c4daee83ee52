"""The floor every service may stand on: configuration, metrics, command-line argument
types, Kafka topic administration and the embedded servers. Nothing here imports a
service; the composition roots (`services/runtime`, the API) sit on top of everything."""
