"""Plain text inside chat Markdown: catalog strings (adapter names, tags) and the agent's words reach chat
clients that render Markdown, so a name like `![x](http://host/track.png)` must show as text, not load an
image from anywhere. Characters that open inline markup are backslash-escaped (CommonMark lets any ASCII
punctuation be); line starts are left alone, so the answer's list of picks still reads as a list."""

from __future__ import annotations

import re

_INLINE = re.compile(r"([\\`*_\[\]()<>!|~{}])")


def escape(text: str) -> str:
    return _INLINE.sub(r"\\\1", text)
