"""Feishu's event encryption and signature (Encrypt Key mode), with ``cryptography``.

key = SHA-256(encrypt_key); body = base64(iv + AES-256-CBC(PKCS#7(json))); signature =
SHA-256(timestamp + nonce + encrypt_key + raw body) in hex.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

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
