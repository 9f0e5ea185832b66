"""Masking personal data in text a user wrote: e-mail addresses, payment card numbers
(Luhn-valid), IBANs (mod-97-valid) and phone numbers. Synth masks samples with it, the
conversation log every question, answer and comment before it is written."""

from __future__ import annotations

import re

_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_PHONE = re.compile(r"(?<![\w.])\+?\(?\d[\d ().-]{7,}\d\b")


def _luhn(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _iban_valid(text: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to 10..35, mod 97 = 1."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def mask_pii(text: str) -> str:
    """``text`` with e-mail addresses, IBANs, card-like numbers (Luhn-valid) and phone
    numbers replaced by ``[EMAIL]``, ``[IBAN]``, ``[CARD]`` and ``[PHONE]``."""
    text = _EMAIL.sub("[EMAIL]", text)
    text = _IBAN.sub(lambda m: "[IBAN]" if _iban_valid(m.group()) else m.group(), text)

    def card(match: re.Match) -> str:
        digits = re.sub(r"\D", "", match.group())
        return "[CARD]" if _luhn(digits) else match.group()

    text = _CARD.sub(card, text)
    return _PHONE.sub(
        lambda m: "[PHONE]" if len(re.sub(r"\D", "", m.group())) >= 9 else m.group(), text
    )
