"""Temporal payload encryption (HUB_TEMPORAL_CODEC_KEY): AES-GCM, the key id in each payload's
metadata, so keys rotate: the first key encrypts, every listed key decrypts."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from collections.abc import Iterable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12


class CodecError(ValueError):
    """A payload that cannot be decrypted here (unknown key id, tampered or truncated data)."""


def parse_keys(setting: str) -> list[tuple[str, bytes]]:
    """`kid1:base64key,kid0:base64key` -> [(kid, key)], 16, 24 or 32-byte AES keys."""
    keys: list[tuple[str, bytes]] = []
    for part in setting.split(","):
        if not part.strip():
            continue
        kid, sep, encoded = part.strip().partition(":")
        if not sep or not kid:
            raise ValueError("HUB_TEMPORAL_CODEC_KEY must be 'kid:base64key[,kid:base64key...]'")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"HUB_TEMPORAL_CODEC_KEY: key {kid!r} is not base64") from exc
        if len(key) not in (16, 24, 32):
            raise ValueError(
                f"HUB_TEMPORAL_CODEC_KEY: key {kid!r} must be 16, 24 or 32 bytes, not {len(key)}"
            )
        if any(kid == known for known, _ in keys):
            raise ValueError(f"HUB_TEMPORAL_CODEC_KEY: key id {kid!r} is listed twice")
        keys.append((kid, key))
    return keys


class EncryptionCodec(PayloadCodec):
    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("an encryption codec needs at least one key")
        self.key_id = keys[0][0]
        self.ciphers = {kid: AESGCM(key) for kid, key in keys}

    async def encode(self, payloads: Iterable[Payload]) -> list[Payload]:
        cipher = self.ciphers[self.key_id]
        encoded = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            data = nonce + cipher.encrypt(nonce, payload.SerializeToString(), None)
            encoded.append(
                Payload(metadata={"encoding": ENCODING, KEY_ID: self.key_id.encode()}, data=data)
            )
        return encoded

    async def decode(self, payloads: Iterable[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                decoded.append(payload)  # written before encryption was turned on
                continue
            kid = payload.metadata.get(KEY_ID, b"").decode("utf-8", "replace")
            cipher = self.ciphers.get(kid)
            if cipher is None:
                raise CodecError(f"payload encrypted with unknown key id {kid!r}")
            try:
                plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], None)
            except InvalidTag as exc:
                raise CodecError(f"payload with key id {kid!r} does not decrypt (wrong key?)") from exc
            decoded.append(Payload.FromString(plain))
        return decoded


def codec_from_setting(setting: str) -> EncryptionCodec | None:
    keys = parse_keys(setting)
    return EncryptionCodec(keys) if keys else None


def data_converter(setting: str) -> DataConverter:
    """The default converter, encrypting payloads and failure messages when keys are set."""
    codec = codec_from_setting(setting)
    if codec is None:
        return DataConverter.default
    return dataclasses.replace(
        DataConverter.default,
        payload_codec=codec,
        # Failure messages and stack traces can carry message text: encode them too.
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
