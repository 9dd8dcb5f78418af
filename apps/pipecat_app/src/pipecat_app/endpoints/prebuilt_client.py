"""pipecat's prebuilt voice client at ``/client/``, working without internet.

The client (``pipecat-ai-small-webrtc-prebuilt``) gets the microphone through
daily-js, whose call object loads Daily's call-machine bundle from Daily's CDN
first; daily-js's npm package does not ship that bundle, so on a network
without internet the client never connects. The app serves the client's own files unchanged except
its ``index.html``, whose entry script is replaced by a module that loads the
same entry and then installs ``static/local-media.js``: daily-js hands out a
``LocalMediaCall`` (the call API pipecat's DailyMediaManager uses, done with
getUserMedia and Web Audio) instead of a call object, and the page asks for
nothing outside the app.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse

LOCAL_MEDIA = Path(__file__).resolve().parent.parent / "static" / "local-media.js"

# The one entry script vite writes into the client's index.html.
_ENTRY = re.compile(r'<script type="module"[^>]*\ssrc="(\./assets/index-[\w-]+\.js)"></script>')


def offline_index(index_html: str) -> str:
    """The client's ``index.html`` with its entry loaded through the local media module."""
    entries = _ENTRY.findall(index_html)
    if len(entries) != 1:
        raise RuntimeError(
            "pipecat-ai-small-webrtc-prebuilt's index.html does not have exactly one entry "
            f"script (found {entries}); the offline media layer cannot be installed: check "
            "the package version pinned in apps/pipecat_app/pyproject.toml"
        )
    loader = (
        '<script type="module">\n'
        f'    import * as client from "{entries[0]}";\n'
        '    import { installLocalMedia } from "./local-media.js";\n'
        "    installLocalMedia(client);\n"
        "  </script>"
    )
    return _ENTRY.sub(lambda _match: loader, index_html)


def mount_prebuilt_client(app: FastAPI) -> None:
    """Serve the prebuilt client at ``/client/`` with local media installed."""
    from pipecat_ai_small_webrtc_prebuilt.frontend import SmallWebRTCPrebuiltUI

    dist = Path(str(SmallWebRTCPrebuiltUI.directory))
    page = offline_index((dist / "index.html").read_text())

    @app.get("/client/", include_in_schema=False)
    @app.get("/client/index.html", include_in_schema=False)
    async def client_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/client/local-media.js", include_in_schema=False)
    async def local_media() -> FileResponse:
        return FileResponse(LOCAL_MEDIA, media_type="text/javascript")

    app.mount("/client", SmallWebRTCPrebuiltUI)
