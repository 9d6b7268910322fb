#!/usr/bin/env python3
"""The official UID2 Python SDK (uid2-client 2.9.0) as the reference for
email normalization, phone validation and hashing.

Writes, or with --check verifies, tests/interop/normalize_vectors.json: the
PROTOCOL.md vectors and invalid cases plus ~1,000 generated emails and ~200
generated phones (fixed seed), each with the SDK's normalized form and
base64 SHA-256, or null where the SDK refuses the input. The crate's unit
test `the_python_sdk_vectors_normalize_and_hash_the_same` (in
src/identity/normalize.rs) reads the same file, so the two together show
the crate and the SDK agree.

Known, deliberate divergences are left out of the generated set:
- spaces inside the local part (the operator drops every one; SDK 2.9.0
  keeps all but the leading ones; the crate follows the operator);
- non-ASCII digits in phones (SDK's isdigit() accepts them; the operator
  and the crate do not).

Usage: normalize_vectors.py [--check]
  --check  regenerate in memory and fail (exit 1) if the file differs, i.e.
           if the SDK no longer produces what the crate is tested against.
The interpreter must be able to import uid2_client.
"""

import json
import os
import random
import sys
from importlib import metadata

from uid2_client import input_util

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "normalize_vectors.json")
SEED = 20260808

PROTOCOL_EMAILS = [
    "TEst.TEST@Test.com ",
    "TEst.TEst+123@GMail.Com",
    "test+test@test.com",
    "test+test@gmail.com",
    "  testtest@test.com  ",
    "user@example.com",
    "JANE.SAOIRSE@gmail.com",
    "JaneSaoirse+Work@example.com",
    "",
    " @",
    "@",
    "a@",
    "@b",
    "@b.com",
    "+",
    " ",
    "+@gmail.com",
    ".+@gmail.com",
    "a@ba@z.com",
]
PROTOCOL_PHONES = [
    "+12345678901",
    "+441234567890",
    "+123456789",
    "+1234567890123456",
    "+1234567890 ",
    "+12345+67890",
    "555-555-5555",
    "1234567890",
]

# No space: spaces reach the local part only as leading ones (see above).
LOCAL_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" + ".+_-\t'ÄéØ😊"
DOMAIN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" + ".- \tÉ"
DOMAINS = ["gmail.com", "GMAIL.COM", "GMail.Com", "googlemail.com", "example.com", "Example.ORG"]


def generated_emails(rng):
    emails = []
    for _ in range(1000):
        lead = " " * rng.choice([0, 0, 0, 1, 2])
        trail = " " * rng.choice([0, 0, 0, 1, 3])
        local = "".join(rng.choice(LOCAL_CHARS) for _ in range(rng.randint(0, 14)))
        roll = rng.random()
        if roll < 0.6:
            domain = rng.choice(DOMAINS)
        elif roll < 0.95:
            domain = "".join(rng.choice(DOMAIN_CHARS) for _ in range(rng.randint(0, 12)))
        else:
            domain = rng.choice(DOMAINS) + "@" + rng.choice(DOMAINS)
        at = "" if rng.random() < 0.03 else "@"
        emails.append(f"{lead}{local}{at}{domain}{trail}")
    return emails


def generated_phones(rng):
    phones = []
    for _ in range(200):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(8, 17)))
        roll = rng.random()
        if roll < 0.8:
            phones.append("+" + digits)
        elif roll < 0.9:
            phones.append(digits)
        else:
            at = rng.randint(0, len(digits))
            phones.append("+" + digits[:at] + rng.choice(" -+x()") + digits[at:])
    return phones


def email_row(email):
    normalized = input_util.normalize_email_string(email)
    if normalized is None:
        return [email, None, None]
    return [email, normalized, input_util.normalize_and_hash_email(email)]


def phone_row(phone):
    if not input_util.is_phone_number_normalized(phone):
        return [phone, None]
    return [phone, input_util.normalize_and_hash_phone(phone)]


def render():
    rng = random.Random(SEED)
    emails = PROTOCOL_EMAILS + generated_emails(rng)
    phones = PROTOCOL_PHONES + generated_phones(rng)
    lines = ['{"sdk": "uid2-client ' + metadata.version("uid2-client") + '",', ' "emails": [']
    lines += ["  " + json.dumps(email_row(e), ensure_ascii=False) + "," for e in emails]
    lines[-1] = lines[-1].rstrip(",")
    lines += [" ],", ' "phones": [']
    lines += ["  " + json.dumps(phone_row(p), ensure_ascii=False) + "," for p in phones]
    lines[-1] = lines[-1].rstrip(",")
    lines += [" ]", "}"]
    return "\n".join(lines) + "\n", len(emails), len(phones)


def main():
    text, emails, phones = render()
    if sys.argv[1:] == ["--check"]:
        with open(FIXTURE, encoding="utf-8") as f:
            committed = f.read()
        if committed != text:
            print(f"normalize-vectors: the SDK's answers differ from {FIXTURE}", file=sys.stderr)
            return 1
        print(f"normalize-vectors: the SDK agrees on all {emails} emails and {phones} phones")
        return 0
    if sys.argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    with open(FIXTURE, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"normalize-vectors: wrote {FIXTURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
