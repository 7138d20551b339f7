"""RabbitMQ plumbing: the catalogue and topology declared, deliveries consumed and settled, and
messages published the way a Convey service publishes them."""
