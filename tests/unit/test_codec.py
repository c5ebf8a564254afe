"""The payload codec: AES-GCM with the key id in the metadata, keys that rotate, bad settings."""

from __future__ import annotations

import base64
import os

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes

from api.codec import CodecError, EncryptionCodec, codec_from_setting, data_converter, parse_keys


def key(n: int = 32) -> str:
    return base64.b64encode(os.urandom(n)).decode()


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


async def test_payloads_are_encrypted_under_the_first_key_and_decrypt_back():
    codec = codec_from_setting(f"new:{key()},old:{key(16)}")
    [encrypted] = await codec.encode([plain("+14155551234 says hi")])
    assert encrypted.metadata["encoding"] == b"binary/encrypted"
    assert encrypted.metadata["encryption-key-id"] == b"new"
    assert b"+14155551234" not in encrypted.SerializeToString()
    assert await codec.decode([encrypted]) == [plain("+14155551234 says hi")]
    # The same plaintext never encrypts to the same bytes (a fresh nonce each time).
    [again] = await codec.encode([plain("+14155551234 says hi")])
    assert again.data != encrypted.data


async def test_rotation_old_payloads_still_decode_and_unknown_keys_are_refused():
    old_key, new_key = key(), key()
    [written_before] = await codec_from_setting(f"old:{old_key}").encode([plain("history")])
    rotated = codec_from_setting(f"new:{new_key},old:{old_key}")
    assert await rotated.decode([written_before]) == [plain("history")]
    [written_after] = await rotated.encode([plain("later")])
    assert written_after.metadata["encryption-key-id"] == b"new"
    with pytest.raises(CodecError, match="unknown key id 'new'"):
        await codec_from_setting(f"old:{old_key}").decode([written_after])
    # Same id, different key (or tampered data): refused, not garbage.
    with pytest.raises(CodecError, match="does not decrypt"):
        await codec_from_setting(f"new:{key()}").decode([written_after])


async def test_unencrypted_payloads_pass_through_decode():
    codec = EncryptionCodec([("k", os.urandom(32))])
    assert await codec.decode([plain("from before encryption")]) == [plain("from before encryption")]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("nokey", "kid:base64key"),
        (":" + key(), "kid:base64key"),
        ("k1:not base64!", "not base64"),
        ("k1:" + key(20), "16, 24 or 32 bytes"),
        (f"k1:{key()},k1:{key()}", "listed twice"),
    ],
)
def test_bad_settings_are_refused_with_a_message(setting, message):
    with pytest.raises(ValueError, match=message):
        parse_keys(setting)


def test_no_setting_means_the_default_converter():
    assert parse_keys("") == []
    assert data_converter("") is DataConverter.default
    converter = data_converter(f"k:{key()}")
    assert isinstance(converter.payload_codec, EncryptionCodec)
    # Failure messages can carry message text too: they are encoded as payloads.
    assert isinstance(converter.failure_converter, DefaultFailureConverterWithEncodedAttributes)
