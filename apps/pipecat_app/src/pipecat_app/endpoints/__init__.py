"""The HTTP endpoints through which people reach the assistant.

- ``voice``: WebRTC signalling (SmallWebRTC) and one voice session per peer, the ``/voice`` page;
- ``text``: typed conversations over ``POST /api/chat`` and the ``/ws/chat`` websocket;
- ``prebuilt_client``: pipecat's prebuilt voice client at ``/client/``, working offline.

``server.create_app`` mounts them; ``twin-app chat`` (the terminal) needs none of them.
"""
