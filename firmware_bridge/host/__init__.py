"""Host side of a device link: the Edge Impulse AT protocol, the client, port discovery, the serial monitor, capture, and streaming a test set."""
