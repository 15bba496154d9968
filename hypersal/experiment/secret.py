"""What looks like a secret, so that no copy of the code carries one.

The code snapshot (`<base_dir>/.code/`, often readable by a whole group) and a sweep's
diff.patch copy what the checkout holds; a checkout may hold `.env`, a `.comet.config` with an
API key, a private key, or a file assigning a token. Two tests, each cheap:

- the name: `.env`, `.env.*`, `*.env`, `.comet.config`, `.netrc`, keys (`*.pem`, `*.key`, `id_rsa`
  and the other ssh key types), credential files, anything under `.ssh/`, `.aws/`, `.gnupg/`;
- the content: a private key block, or a line assigning a credential-looking literal (8 or
  more characters with a letter and a digit) to a name holding API_KEY, TOKEN, SECRET,
  PASSWORD, PASSWD or ACCESS_KEY (`COMET_API_KEY=...`, `api_key = ...`, `"token": "..."`).
  A value that reads a variable or calls code (`os.environ[...]`, `$TOKEN`) is not a secret,
  nor a constant's name (`KEY = "COMET_API_KEY"`). A line may start with a diff's + or -.
"""
from __future__ import annotations

import fnmatch
import re
from pathlib import PurePosixPath

NAMES = (".env", ".env.*", "*.env", ".comet.config", ".netrc", "_netrc", ".pgpass", ".git-credentials",
         ".pypirc", ".npmrc", "credentials", "credentials.json", "*.pem", "*.key", "*.p12", "*.pfx",
         "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*")
FOLDERS = (".ssh", ".aws", ".gnupg")
_PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_ASSIGNMENT = re.compile(
    rb"""^[+-]?[ \t]*(?:export[ \t]+)?["']?(?P<name>[A-Za-z0-9_.-]*(?:API[_-]?KEY|TOKEN|SECRET|PASSWORD|PASSWD|ACCESS[_-]?KEY)
    [A-Za-z0-9_.-]*)["']?[ \t]*[=:][ \t]*["']?(?P<value>[A-Za-z0-9+/=_.~:@!#%^&*-]{8,})["']?[ \t]*,?[ \t]*\r?$""",
    re.I | re.M | re.X)
_CONSTANT = re.compile(rb"^[A-Z0-9_]+$")


def by_name(name: str) -> bool:
    """Whether a path (relative, with /) is named like a secret."""
    path = PurePosixPath(name)
    return any(fnmatch.fnmatchcase(path.name, pattern) for pattern in NAMES) or \
        any(part in FOLDERS for part in path.parts[:-1])


def in_text(data: bytes) -> str | None:
    """The name of what a text holds that looks like a secret ('a private key', 'TOKEN=...'),
    else None. Binary data (a NUL byte in its first 8 KB) is not searched."""
    if b"\0" in data[:8192]:
        return None
    if _PRIVATE_KEY.search(data):
        return "a private key"
    for match in _ASSIGNMENT.finditer(data):
        value = match["value"]
        if re.search(rb"[A-Za-z]", value) and re.search(rb"[0-9]", value) and not _CONSTANT.match(value):
            return f"{match['name'].decode('ascii', 'replace')}=..."
    return None


def reason(name: str, data: bytes | None = None) -> str | None:
    """Why the file `name` (with its content `data`) must not be copied, or None."""
    if by_name(name):
        return "named like a secret"
    found = in_text(data) if data is not None else None
    return f"holds {found}" if found else None


def filter_diff(diff: str) -> tuple[str, list[str]]:
    """`git diff` text less the files' parts that look like secrets (each replaced by a line
    saying so): (the diff, the paths left out)."""
    out, left = [], []
    for block in re.split(r"(?m)^(?=diff --git )", diff):
        match = re.match(r"diff --git a/.* b/(.*)$", block, re.M)
        path = match[1].strip('"') if match else ""
        if match and reason(path, block.encode("utf-8", "surrogateescape")):
            left.append(path)
            out.append(f"# left out: the changes of {path} (it looks like a secret)\n")
        else:
            out.append(block)
    return "".join(out), left
