"""Terminal output helpers for the CLI layer (the library itself never prints)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console

console = Console(highlight=False)
if not console.is_terminal and "COLUMNS" not in os.environ:
    # Piped or logged output: wide enough that tables keep whole column names.
    console = Console(highlight=False, width=160)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # paths stay copyable


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
