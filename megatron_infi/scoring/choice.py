"""Multiple choice: the option letter a model chose, from free text.

Models answer "The answer is (B)", "Answer: B", "\\boxed{B}", "B. 9 lines", "(B)" or just "B". The
article "A" makes naive matching wrong ("A radical has ..." is not option A), so a letter only
counts where the text marks it as an answer.
"""

from __future__ import annotations

import re

from megatron_infi.scoring.math import last_boxed


def _letter_class(letters: str) -> str:
    return "[" + re.escape(letters) + "]"


def extract_choice(text: str, letters: str = "ABCD") -> str | None:
    """The chosen letter (upper case, one of `letters`), or None when the text names none."""
    if not text:
        return None
    cls = _letter_class(letters.upper())
    option = rf"\(?({cls})\)?(?![A-Za-z0-9])"

    boxed = last_boxed(text)
    if boxed is not None:
        inner = re.sub(r"\\text(?:bf)?\{([^}]*)\}", r"\1", boxed).strip()
        found = re.match(option, inner)
        if found:
            return found.group(1)

    # "the answer is (B)", "Answer: B", "correct option is B", "answer would be B"
    statements = re.findall(
        rf"(?i:answer|option|choice)\s*(?i:is|:|would\s+be|=)?\s*(?i:option\s+|choice\s+)?\**\s*{option}",
        text,
    )
    if statements:
        return statements[-1]

    stripped = text.strip()
    # the whole reply is the option: "B", "(B)", "B.", "B)"
    whole = re.fullmatch(rf"\(?({cls})[.):]?", stripped)
    if whole:
        return whole.group(1)
    # the reply starts with the option, "B. 9 lines" / "(B) 9 lines" / "B) ..."
    lead = re.match(rf"\(?({cls})(?:\)|\.|:)\s", stripped)
    if lead:
        return lead.group(1)
    # a parenthesised option anywhere, the last one wins: "... so we pick (C)."
    parens = re.findall(rf"\(({cls})\)", text)
    if parens:
        return parens[-1]
    return None
