"""Bearer tokens for the model server (`serve.auth_token_file`), stored hashed.

The token file holds one token per line, never the token itself:

    # name    role     sha256 of the token
    ci-bot    predict  sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    alice     admin    sha256:...

Roles: `predict` may call prediction endpoints; `admin` may call those and the admin endpoints
(reload, promote, rollback). Tokens are random (32 bytes), so one SHA-256 is enough: nothing to
brute-force; comparison is constant-time. Make a token with

    python -m scaleflow.security.auth new --name alice --role admin --file tokens.txt

which appends the hashed line and prints the token once.

The server calls `check(request.headers.get("Authorization"), "predict")` per request: it returns
the caller (`Principal`) or raises `Unauthorized` (401: no or unknown token) / `Forbidden` (403:
valid token, role too low). Every refusal is audited (event `auth_denied`: role wanted, reason,
client address) without the token or the request payload.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sys
from dataclasses import dataclass
from typing import Optional

from scaleflow.errors import ConfigError, ScaleflowError

ROLES = ("predict", "admin")
ROLE_RANK = {"predict": 1, "admin": 2}


class Unauthorized(ScaleflowError):
    """401: no token, or a token the server does not know."""

    status = 401


class Forbidden(ScaleflowError):
    """403: a known token whose role does not allow this."""

    status = 403


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


def token_hash(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


class TokenFile:
    """The hashed tokens of `path`. Bad lines are a ConfigError naming the file and line."""

    def __init__(self, path: str, key: str = "serve.auth_token_file"):
        self.path = path
        self.entries: list[tuple[str, str, str]] = []  # (hash, name, role)
        try:
            with open(path) as f:
                lines = f.readlines()
        except OSError as e:
            raise ConfigError(key, path, "a readable token file", e.strerror or str(e)) from None
        for n, line in enumerate(lines, start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 3 or parts[1] not in ROLES or not parts[2].startswith("sha256:") or len(parts[2]) != 71:
                raise ConfigError(key, path, "lines of `name role sha256:<64 hex>` (role: predict or admin)",
                                  f"Line {n} is not; make tokens with python -m scaleflow.security.auth new")
            self.entries.append((parts[2], parts[0], parts[1]))
        if not self.entries:
            raise ConfigError(key, path, "a token file with at least one token",
                              "Make one with python -m scaleflow.security.auth new --name NAME --role predict --file "
                              + path)

    def find(self, token: str) -> Optional[Principal]:
        digest = token_hash(token)
        found = None
        for stored, name, role in self.entries:  # compare against all: no timing hint of which matched
            if hmac.compare_digest(stored, digest):
                found = Principal(name, role)
        return found


_tokens: Optional[TokenFile] = None


def configure(path: Optional[str]) -> Optional[TokenFile]:
    """Load `serve.auth_token_file` for `check` (None: no file, every request is refused)."""
    global _tokens
    _tokens = TokenFile(os.path.expanduser(path)) if path else None
    return _tokens


def check(header: Optional[str], role: str, *, tokens: Optional[TokenFile] = None,
          client: Optional[str] = None) -> Principal:
    """The caller of a request with `Authorization: header`, allowed `role`; raises Unauthorized or
    Forbidden (and audits the refusal, without the token or payload)."""
    from scaleflow.security import audit

    if role not in ROLES:
        raise ValueError(f"role={role!r}: expected one of {', '.join(ROLES)}")
    tokens = tokens or _tokens
    scheme, _, token = (header or "").strip().partition(" ")
    principal = tokens.find(token.strip()) if tokens and scheme.lower() == "bearer" and token.strip() else None
    if principal is None:
        reason = "no bearer token" if not token.strip() or scheme.lower() != "bearer" else "unknown token"
        audit.record("auth_denied", status=401, role=role, reason=reason, client=client)
        raise Unauthorized(f"401 Unauthorized: {reason}")
    if ROLE_RANK[principal.role] < ROLE_RANK[role]:
        audit.record("auth_denied", status=403, role=role, reason=f"{principal.name} has role {principal.role}",
                     client=client, principal=principal.name)
        raise Forbidden(f"403 Forbidden: {role} role required")
    return principal


def new_token(path: str, name: str, role: str) -> str:
    """Append a fresh token's hash to `path` (mode 600) and return the token (shown once)."""
    if role not in ROLES or not name or any(c.isspace() for c in name):
        raise ConfigError("role" if role not in ROLES else "name", role if role not in ROLES else name,
                          "role predict or admin and a name without spaces")
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(f"{name} {role} {token_hash(token)}\n")
    return token


def main(argv: Optional[list[str]] = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m scaleflow.security.auth",
                                     description="Make a bearer token for the scaleflow server.")
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="append a hashed token to the token file and print the token once")
    new.add_argument("--name", required=True)
    new.add_argument("--role", choices=ROLES, default="predict")
    new.add_argument("--file", required=True, help="the token file (serve.auth_token_file)")
    args = parser.parse_args(argv)
    try:
        token = new_token(args.file, args.name, args.role)
    except (ConfigError, OSError) as e:
        print(f"scaleflow: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(token)


if __name__ == "__main__":
    main()
