"""The hub's adapters: Socket.IO, HTTP, the plain WebSocket and SSE gateways, the
AsyncAPI and OpenAPI documents, the TypeScript types and the web pages."""
