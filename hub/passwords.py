"""Password hashing (scrypt, from the standard library) and generation.

Parameters follow current guidance for scrypt (OWASP: N=2**17, r=8, p=1; 128 MiB and about
0.4 s per hash here). Each hash records its own parameters, so older hashes keep working and
are upgraded at the owner's next successful login (:func:`needs_upgrade`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

N, R, P = 2**17, 8, 1
MAXMEM = 256 * 2**20  # scrypt needs 128 * N * r bytes; OpenSSL refuses more than maxmem


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=max(MAXMEM, 129 * n * r)
    )


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, N, R, P)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def needs_upgrade(stored: str) -> bool:
    """Whether `stored` was made with weaker parameters than today's (rehash at next login)."""
    try:
        kind, n, r, p, _, _ = stored.split("$")
        return kind != "scrypt" or (int(n), int(r), int(p)) < (N, R, P)
    except ValueError:
        return True


@functools.cache
def dummy_hash() -> str:
    """A hash to check unknown names against: one scrypt at today's parameters, exactly the
    work a known name costs, so timing does not tell which names exist."""
    return hash_password(secrets.token_urlsafe(16))


def generate_password() -> str:
    """16 characters from an unambiguous alphabet (about 90 bits)."""
    alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(16))
