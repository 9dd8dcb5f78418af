"""``twin-app``: serve the assistant, or chat with it in the terminal.

    twin-app serve [--config FILE]   # browser voice, text endpoints, health, metrics
    twin-app chat  [--config FILE]   # type, read the answers (no microphone needed)
    twin-app check [--config FILE]   # validate the config and print it (secrets hidden)

Without ``--config``: ``$TWIN_APP_CONFIG``, else the embedded ``config/demo.toml``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from twin_common.cli import EXIT_CONFIG, command_parser, load_or_say_why

from pipecat_app.config import DEMO_CONFIG, AppConfig, load_config


def _config(path: str | None) -> AppConfig:
    chosen = Path(path or os.environ.get("TWIN_APP_CONFIG") or DEMO_CONFIG)
    return load_config(chosen)


async def _chat(config: AppConfig) -> int:
    from pipecat_app.session import TextSession

    session = TextSession(config)
    await session.start()
    print("twin-app chat: type a message, empty line or Ctrl-D to leave.", flush=True)
    try:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line.strip():
                return 0
            print("twin> ", end="", flush=True)
            try:
                async for piece in session.ask(line.strip()):
                    print(piece, end="", flush=True)
            except (TimeoutError, RuntimeError) as exc:
                print(f"[no answer: {exc}]", end="")
            print(flush=True)
    finally:
        await session.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``twin-app`` command."""
    parser, _ = command_parser(
        "twin-app",
        (__doc__ or "").splitlines()[0],
        {
            "serve": "run the HTTP server (browser voice, text, health, metrics)",
            "chat": "chat in the terminal",
            "check": "validate the config file and print the result",
        },
        config_help="TOML config file (default: config/demo.toml)",
    )
    args = parser.parse_args(argv)
    config = load_or_say_why("twin-app", lambda: _config(args.config))
    if config is None:
        return EXIT_CONFIG
    if args.command == "check":
        print(config.model_dump_json(indent=2))
        return 0
    if args.command == "chat":
        from pipecat_app.logs import setup_logging

        setup_logging(config.log.model_copy(update={"level": "WARNING"}))
        try:
            return asyncio.run(_chat(config))
        except KeyboardInterrupt:
            return 130
    from pipecat_app.server import serve

    serve(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
