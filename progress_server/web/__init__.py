"""HTTP and WebSocket handlers: they parse, call one domain function and shape the answer."""
