"""AES-256-GCM for lookup payloads, and the wrapping of each payload key at rest.

Wire format (docs/lookups.md): `{"iv": base64(12 bytes), "data": base64(ciphertext ‖ 16-byte tag)}`,
the plaintext being the UTF-8 JSON object. Keys are 32 bytes, shown to the admin once as
base64. A payload key is never stored or logged in the clear: the `lookup.define`
command carries it wrapped under the key-encryption key of the configuration
(UNIFIER_LOOKUP_KEK), with the channel and lookup name as associated data, so a wrapped
key copied to another definition does not open.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12


class CryptoFailed(ValueError):
    """A payload or wrapped key did not decrypt (wrong key, altered, or malformed)."""


def new_key() -> bytes:
    """A fresh payload key. Only the API calls it (the core never draws randomness):
    the command then carries the key wrapped, and replay rebuilds the same state."""
    return AESGCM.generate_key(bit_length=256)


def _aad(channel_id: str, name: str) -> bytes:
    return f"unifier-lookup-key\x1f{channel_id}\x1f{name}".encode()


def wrap(kek: bytes, key: bytes, channel_id: str, name: str) -> str:
    nonce = os.urandom(NONCE_BYTES)
    return base64.b64encode(nonce + AESGCM(kek).encrypt(nonce, key, _aad(channel_id, name))).decode()


def unwrap(kek: bytes, wrapped: str, channel_id: str, name: str) -> bytes:
    try:
        raw = base64.b64decode(wrapped, validate=True)
        return AESGCM(kek).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(channel_id, name))
    except (binascii.Error, ValueError, InvalidTag):
        raise CryptoFailed("the stored key does not open with UNIFIER_LOOKUP_KEK (was the KEK changed?)") from None


def seal(key: bytes, plaintext: bytes) -> dict[str, str]:
    nonce = os.urandom(NONCE_BYTES)
    data = AESGCM(key).encrypt(nonce, plaintext, None)
    return {"iv": base64.b64encode(nonce).decode(), "data": base64.b64encode(data).decode()}


def open_sealed(key: bytes, envelope: Any) -> bytes:
    if not isinstance(envelope, dict) or not isinstance(envelope.get("iv"), str) or not isinstance(envelope.get("data"), str):
        raise CryptoFailed('an encrypted answer is a JSON object {"iv": base64, "data": base64}')
    try:
        nonce = base64.b64decode(envelope["iv"], validate=True)
        data = base64.b64decode(envelope["data"], validate=True)
        if len(nonce) != NONCE_BYTES:
            raise CryptoFailed(f"iv must be {NONCE_BYTES} bytes, got {len(nonce)}")
        return AESGCM(key).decrypt(nonce, data, None)
    except binascii.Error:
        raise CryptoFailed("iv or data is not base64") from None
    except InvalidTag:
        raise CryptoFailed("the answer does not decrypt with the lookup's key (wrong key or altered)") from None


def kek_of(encoded: str) -> bytes:
    """The KEK from its configured base64 form (validated by Settings)."""
    return base64.b64decode(encoded, validate=True)
