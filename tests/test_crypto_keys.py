"""Key generation, encodings, private key files (0600) and the allow-list."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fedsys.crypto import (
    exchange_key_from_pem,
    exchange_public_from_raw,
    generate_exchange_key,
    generate_signing_key,
    load_allow_list,
    private_to_pem,
    public_to_raw,
    read_exchange_key,
    read_exchange_public_key,
    read_signing_key,
    save_allow_list,
    signing_key_from_pem,
    signing_public_from_raw,
    write_private_key,
    write_public_key,
)
from fedsys.errors import KeyFileError


def test_pem_and_raw_round_trips() -> None:
    signing, exchange = generate_signing_key(), generate_exchange_key()
    back = signing_key_from_pem(private_to_pem(signing))
    assert back.private_bytes_raw() == signing.private_bytes_raw()
    xback = exchange_key_from_pem(private_to_pem(exchange))
    assert xback.private_bytes_raw() == exchange.private_bytes_raw()
    raw = public_to_raw(signing.public_key())
    assert len(raw) == 32 and public_to_raw(signing_public_from_raw(raw)) == raw
    xraw = public_to_raw(exchange.public_key())
    assert public_to_raw(exchange_public_from_raw(xraw)) == xraw


def test_wrong_kind_or_garbage_is_a_key_file_error() -> None:
    with pytest.raises(KeyFileError, match="expected an X25519PrivateKey"):
        exchange_key_from_pem(private_to_pem(generate_signing_key()))
    with pytest.raises(KeyFileError):
        signing_key_from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError):
        signing_public_from_raw(b"short")
    with pytest.raises(KeyFileError):
        exchange_public_from_raw(b"x" * 31)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_private_key_files_are_0600_and_loose_ones_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "client.key"
    key = generate_signing_key()
    write_private_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_signing_key(path).private_bytes_raw() == key.private_bytes_raw()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        write_private_key(path, generate_signing_key())
    write_private_key(path, generate_signing_key(), overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_signing_key(path)
    with pytest.raises(KeyFileError, match="cannot read"):
        read_exchange_key(tmp_path / "missing.key")
    assert [p.name for p in tmp_path.iterdir()] == ["client.key"]  # no temp files left behind


def test_public_key_file_and_allow_list(tmp_path: Path) -> None:
    server = generate_exchange_key()
    write_public_key(tmp_path / "server.pub", server.public_key())
    loaded = read_exchange_public_key(tmp_path / "server.pub")
    assert public_to_raw(loaded) == public_to_raw(server.public_key())
    clients = {f"client-{i}": generate_signing_key().public_key() for i in range(3)}
    save_allow_list(tmp_path / "allow.json", clients)
    back = load_allow_list(tmp_path / "allow.json")
    assert {k: public_to_raw(v) for k, v in back.items()} == {
        k: public_to_raw(v) for k, v in clients.items()
    }
    (tmp_path / "bad.json").write_text('{"c": "zz"}')
    with pytest.raises(KeyFileError, match="not hex"):
        load_allow_list(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(KeyFileError, match="JSON object"):
        load_allow_list(tmp_path / "bad.json")
