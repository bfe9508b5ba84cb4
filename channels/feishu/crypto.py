"""Feishu's event encryption and signature (Encrypt Key mode), with ``cryptography``.

key = SHA-256(encrypt_key); body = base64(iv + AES-256-CBC(PKCS#7(json))); signature =
SHA-256(timestamp + nonce + encrypt_key + raw body) in hex, over a unix-seconds timestamp
that must be recent (:func:`timestamp_is_fresh`), so a captured request cannot be replayed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class UndecryptableEvent(ValueError):
    pass


def decrypt(encrypt_key: str, value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise UndecryptableEvent("not base64") from None
    if len(raw) < 32 or len(raw) % 16:
        raise UndecryptableEvent("not a whole number of AES blocks")
    key = hashlib.sha256(encrypt_key.encode()).digest()
    decryptor = Cipher(algorithms.AES(key), modes.CBC(raw[:16])).decryptor()
    padded = decryptor.update(raw[16:]) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plain = unpadder.update(padded) + unpadder.finalize()
        return plain.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise UndecryptableEvent("bad padding or not UTF-8 (wrong encrypt_key?)") from None


def signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode() + body).hexdigest()


def signature_matches(
    *, timestamp: str, nonce: str, encrypt_key: str, body: bytes, given: str
) -> bool:
    expected = signature(timestamp, nonce, encrypt_key, body)
    return hmac.compare_digest(expected.encode(), given.encode())


_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
"""ASCII digits only (``int()`` would take other scripts' digits, signs and blanks), and few
enough that the arithmetic stays small whatever a client sends."""


def timestamp_is_fresh(timestamp: str, *, now: float, window_seconds: float) -> bool:
    """True when ``timestamp`` is unix seconds within ``window_seconds`` of ``now``, either
    way (clocks differ a little); anything else, including no number at all, is not."""
    if _UNIX_SECONDS.fullmatch(timestamp) is None:
        return False
    return abs(now - int(timestamp)) <= window_seconds
