"""Print an HCL file as JSON, parsed with python-hcl2 (used by the scenarios' verify.yml).

Strings lose their quotes and blocks become plain lists of dicts, so the
playbook can compare values directly: ``server[0].bootstrap_expect == 3``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hcl2


def hcl_to_dict(text: str) -> dict:
    """Parse HCL text into plain Python values."""
    options = hcl2.SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False
    )
    return hcl2.loads(text, serialization_options=options)


def main() -> None:
    json.dump(hcl_to_dict(Path(sys.argv[1]).read_text()), sys.stdout)


if __name__ == "__main__":
    main()
