"""Text from instances, made safe for a terminal."""
from __future__ import annotations

# Every C0 control but tab (newline never reaches a line), DEL and the C1 controls.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x09), *range(0x0a, 0x20),
                                         *range(0x7f, 0xa0))}


def escape(text: str) -> str:
    """`text` with its control characters but tab shown as `\\x1b` etc.: safe for a terminal
    (no ANSI or OSC sequence, no carriage return or backspace overwriting what came before)."""
    return text.translate(_CONTROLS)
