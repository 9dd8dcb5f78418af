"""How people reach the assistant: WebRTC, text (HTTP, websocket, terminal), audio files."""
