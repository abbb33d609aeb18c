"""A pooled client's signing key: the same on every node of the pool, its own among clients,
new with every run, and no file per client (a large population's first samples stay cheap)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fedsys.client.pooled import SECRET_FILE, client_signing_key
from fedsys.errors import KeyFileError


def test_a_clients_key_follows_it_and_only_one_secret_file_is_kept(tmp_path: Path) -> None:
    first = client_signing_key(tmp_path, 7, "sim-3")
    assert client_signing_key(tmp_path, 7, "sim-3") == first  # another node, same client
    assert client_signing_key(tmp_path, 7, "sim-4") != first
    assert client_signing_key(tmp_path, 8, "sim-3") != first  # another run, fresh keys
    files = sorted(p.name for p in (tmp_path / "7").iterdir())
    assert files == [SECRET_FILE]
    assert stat.S_IMODE((tmp_path / "7" / SECRET_FILE).stat().st_mode) == 0o600


def test_a_secret_others_can_read_is_refused(tmp_path: Path) -> None:
    client_signing_key(tmp_path, 1, "sim-0")
    (tmp_path / "1" / SECRET_FILE).chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        client_signing_key(tmp_path, 1, "sim-0")
