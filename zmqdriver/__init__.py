"""zmqdriver: a broker-less ZeroMQ transport driver for oslo.messaging."""
