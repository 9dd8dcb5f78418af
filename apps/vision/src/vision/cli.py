"""``twin-vision``: serve the service, check a config, or describe one image file."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from twin_common.cli import EXIT_CONFIG, command_parser, load_or_say_why

from vision.config import load_config
from vision.images import ImageError, decode_image


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``twin-vision`` command."""
    parser, commands = command_parser(
        "twin-vision",
        __doc__ or "",
        {
            "serve": "run the HTTP service",
            "check": "validate the config and load the detectors",
            "describe": "describe one JPEG or PNG file and print the JSON answer",
        },
        config_help="TOML config file (default: none)",
    )
    commands["describe"].add_argument("image", type=Path)
    commands["describe"].add_argument("--question", default=None)
    commands["describe"].add_argument("--no-ocr", action="store_true", help="do not read text")
    args = parser.parse_args(argv)
    config = load_or_say_why("twin-vision", lambda: load_config(args.config))
    if config is None:
        return EXIT_CONFIG
    if args.command == "serve":
        from vision.server import serve  # uvicorn only when serving

        serve(config)
        return 0
    from vision.service import Vision

    vision = Vision(config)
    if args.command == "check":
        print("config ok; detectors loaded")
        return 0
    try:
        frame = decode_image(
            args.image.read_bytes(), config.server.max_body_bytes, config.server.max_pixels
        )
    except (OSError, ImageError) as exc:
        print(f"twin-vision: {args.image}: {exc}", file=sys.stderr)
        return 1
    answer = asyncio.run(vision.describe(frame, args.question, "upload", not args.no_ocr))
    print(answer.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
