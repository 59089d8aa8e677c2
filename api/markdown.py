r"""The agent's plain text inside chat Markdown. Answers quote catalog strings (adapter names, trigger words,
notes from cards) and the user's prompt; in a client that renders Markdown none of them may become a link, an
image or HTML (a name like `![x](http://host/track.png)` would load an image from anywhere). Only what opens
those is escaped, so the agent's own words read the same in a plain client (the `openai` client printing
`content`): `[` (links, images, reference definitions), `<` before a letter, `/`, `!` or `?` (autolinks, HTML),
a backtick (a quoted string cannot close a code span of ours) and a backslash before one of these or another
backslash (it cannot cancel an escape; a prompt's own `\(` stays as written). A `<lora:name:w>` tag, which
CommonMark would read as an autolink, is shown verbatim as code."""

from __future__ import annotations

import re

_TAG = re.compile(r"<lora:[^<>`\n]*>", re.IGNORECASE)
_OPENS_MARKUP = re.compile(r"[\[`]|<(?=[A-Za-z/!?])|\\(?=[\\\[`<])")


def _escape_openers(text: str) -> str:
    return _OPENS_MARKUP.sub(lambda m: "\\" + m.group(0), text)


def escape(text: str) -> str:
    """`text` as Markdown that renders as that text, with no link, image or HTML of its own."""
    out, start = [], 0
    for tag in _TAG.finditer(text):
        out += [_escape_openers(text[start:tag.start()]), f"`{tag.group(0)}`"]
        start = tag.end()
    return "".join([*out, _escape_openers(text[start:])])
