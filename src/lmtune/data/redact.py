"""data.redact: personal data in the training text replaced by typed placeholders before tokenization.

E-mail addresses become `<EMAIL>`, phone numbers `<PHONE>`, IP addresses `<IP>`, credit-card
numbers `<CREDIT_CARD>`, IBANs `<IBAN>`, URLs `<URL>`, and each of `data.redact_patterns`'s
regexes `<NAME>`. The data files are never touched: the text is changed as it is read, and the
counts per type go to the log and metrics.json.

Detection leans on the libraries that do it well: phone numbers are found by `phonenumbers`
(Google's libphonenumber rules, which tell a phone number from a year or an amount, for
`data.redact_region`'s national formats and every international one); credit-card numbers must
pass the Luhn check and IBANs their mod-97 check (python-stdnum). E-mail addresses, URLs and IP
addresses are small regexes (IPs confirmed by `ipaddress`). Presidio's pattern recognizers do
the same with the same validators, but its analyzer needs spaCy installed and loads a downloaded
spaCy model, which lmtune cannot count on offline.

Where two matches overlap, the longer one wins (a URL holding an e-mail address is one URL).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence

from lmtune.errors import ConfigError
from lmtune.schema import DataConfig

log = logging.getLogger("lmtune")

KINDS = ("email", "phone", "ip", "credit_card", "iban", "url")

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
_URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"']+", re.IGNORECASE)
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# written whole, in groups of four (the last shorter), or as American Express prints them (4-6-5)
_CARD = re.compile(r"(?<![\w-])(?:\d{13,19}|\d{4}([ -])\d{4}(?:\1\d{4}){1,2}(?:\1\d{1,4})?|\d{4}([ -])\d{6}\2\d{5})(?![\w-])")
# written whole, or in groups of four as printed (the last shorter)
_IBAN = re.compile(r"(?<![A-Za-z0-9])(?:[A-Z]{2}\d{2}[A-Z0-9]{11,30}|[A-Z]{2}\d{2}(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)(?![A-Za-z0-9])")
_TRAILING = ".,;:!?)]}'\""  # punctuation that ends a sentence rather than an URL

Span = tuple[int, int, str]  # start, end, placeholder name


def _regex(pattern: re.Pattern[str], name: str, valid: Callable[[str], bool] | None = None) -> Callable[[str], Iterator[Span]]:
    def find(text: str) -> Iterator[Span]:
        for m in pattern.finditer(text):
            if valid is None or valid(m.group()):
                yield m.start(), m.end(), name

    return find


def _urls(text: str) -> Iterator[Span]:
    for m in _URL.finditer(text):
        end = m.end()
        while end > m.start() and text[end - 1] in _TRAILING:
            end -= 1
        yield m.start(), end, "URL"


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _ips(text: str) -> Iterator[Span]:
    yield from _regex(_IPV4, "IP", _is_ip)(text)
    yield from _regex(_IPV6, "IP", _is_ip)(text)


def _is_card(value: str) -> bool:
    from stdnum import luhn

    digits = re.sub(r"[ -]", "", value)
    return 13 <= len(digits) <= 19 and luhn.is_valid(digits)


def _is_iban(value: str) -> bool:
    from stdnum import iban

    return bool(iban.is_valid(value))


def _phones(region: str) -> Callable[[str], Iterator[Span]]:
    def find(text: str) -> Iterator[Span]:
        import phonenumbers

        for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            yield m.start, m.end, "PHONE"

    return find


class Redactor:
    """Replaces what `kinds` and `patterns` find with `<NAME>`; `counts` adds up what was replaced, by placeholder."""

    def __init__(self, kinds: Sequence[str], patterns: Mapping[str, str] | None = None, region: str = "US"):
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; known: {', '.join(KINDS)}")
        finders: dict[str, Callable[[str], Iterator[Span]]] = {
            "email": _regex(_EMAIL, "EMAIL"),
            "url": _urls,
            "ip": _ips,
            "credit_card": _regex(_CARD, "CREDIT_CARD", _is_card),
            "iban": _regex(_IBAN, "IBAN", _is_iban),
            "phone": _phones(region),
        }
        self.finders = [finders[k] for k in KINDS if k in kinds]
        for name, pattern in (patterns or {}).items():
            self.finders.append(_regex(re.compile(pattern), name.upper()))
        self.counts: Counter[str] = Counter()

    def __call__(self, text: str) -> str:
        kept: list[Span] = []
        # longest first: a match overlapping a longer one already kept is dropped
        for span in sorted((s for find in self.finders for s in find(text)), key=lambda s: (s[0] - s[1], s[0])):
            if all(span[1] <= k[0] or span[0] >= k[1] for k in kept):
                kept.append(span)
        if not kept:
            return text
        pieces, at = [], 0
        for start, end, name in sorted(kept):
            pieces += [text[at:start], f"<{name}>"]
            at = end
            self.counts[name] += 1
        pieces.append(text[at:])
        return "".join(pieces)


def redactor_for(cfg: DataConfig) -> Redactor | None:
    """The Redactor data.redact and data.redact_patterns ask for, or None when they ask for nothing."""
    kinds = list(KINDS) if cfg.redact is True else list(cfg.redact or [])
    if not kinds and not cfg.redact_patterns:
        return None
    if "phone" in kinds:
        import phonenumbers

        if cfg.redact_region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ConfigError(f"data.redact_region={cfg.redact_region!r} is not a region phonenumbers knows; give a two-letter "
                              f"country code such as US, GB, DE or IN")
    return Redactor(kinds, cfg.redact_patterns, cfg.redact_region.upper())


def log_redacted(redactor: Redactor | None, source: str) -> dict[str, int]:
    """Log what the redactor replaced since the last call (in `source`), and start counting afresh; returns the counts."""
    if redactor is None:
        return {}
    counts = dict(sorted(redactor.counts.items()))
    redactor.counts.clear()
    if counts:
        log.info("data.redact: %s: replaced %s", source, ", ".join(f"{n} {name}" for name, n in counts.items()))
    else:
        log.info("data.redact: %s: nothing to replace", source)
    return counts


def add_counts(total: dict[str, int], more: Mapping[str, int]) -> dict[str, int]:
    return {name: total.get(name, 0) + more.get(name, 0) for name in sorted({*total, *more})}
