"""``twin-vision``: serve the service, check a config, or describe one image file."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from vision.config import ConfigError, load_config
from vision.images import ImageError, decode_image


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``twin-vision`` command."""
    parser = argparse.ArgumentParser(prog="twin-vision", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "run the HTTP service"),
        ("check", "validate the config and load the detectors"),
        ("describe", "describe one JPEG or PNG file and print the JSON answer"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--config", type=Path, help="TOML config file (default: none)")
        if name == "describe":
            command.add_argument("image", type=Path)
            command.add_argument("--question", default=None)
            command.add_argument("--no-ocr", action="store_true", help="do not read text")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"twin-vision: {exc}", file=sys.stderr)
        return 2
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
