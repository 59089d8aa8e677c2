r"""The agent's plain text inside chat Markdown. Answers quote catalog strings (adapter names, trigger words,
notes from cards) and the user's prompt; in a client that renders Markdown none of them may become a link, an
image or HTML (a name like `![x](http://host/track.png)` would load an image from anywhere). Only what opens
those is escaped, so the agent's own words and the prompts it quotes read the same in a plain client (the
`openai` client printing `content`): a `[` that could open a link, `<` before a letter, `/`, `!` or `?`
(autolinks, HTML), a backtick (a quoted string cannot close a code span of ours) and a backslash before one of
these or another backslash (it cannot cancel an escape; a prompt's own `\(` stays as written). A
`<lora:name:w>` tag, which CommonMark would read as an autolink, is shown verbatim as code.
"""

from __future__ import annotations

import re

# A `[` opens a link, an image or a reference definition only with a `](`, `][` or `]:` after it (with no
# definition a lone `[label]` stays text), so a prompt's `[[anime]]` reads as written. The whole text is one
# pass, so a link split around a tag (`[x <lora:a> ](http://...)`) is still seen.
_LINK = r"\[(?=.*?\][(\[:])"
_MARKUP = re.compile(rf"(?P<tag><lora:[^<>`\n]*>)|{_LINK}|`|<(?=[A-Za-z/!?])|\\(?=\\|`|<[A-Za-z/!?]|{_LINK})",
                     re.IGNORECASE | re.DOTALL)


def escape(text: str) -> str:
    """`text` as Markdown that renders as that text, with no link, image or HTML of its own."""
    return _MARKUP.sub(lambda m: f"`{m['tag']}`" if m["tag"] else "\\" + m.group(0), text)
