"""The hub's adapters: what turns transports (Socket.IO, HTTP, plain websockets) into operations."""
