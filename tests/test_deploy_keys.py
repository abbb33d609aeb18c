"""`fedsys keys` / `fedsys certs`: file modes, formats Flower accepts, SANs, the allow-list."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.supercore.primitives.asymmetric import uses_nist_ec_curve
from typer.testing import CliRunner

from fedsys.cli import app
from fedsys.crypto import load_allow_list, read_exchange_key, read_signing_key
from fedsys.crypto.keys import load_signing_public_key
from fedsys.deploy.keys_cli import create_certs, revoke_client
from fedsys.deploy.layout import KeyLayout, check_client_id
from fedsys.deploy.pki import certificate_names, node_public_from_openssh
from fedsys.errors import KeyFileError

runner = CliRunner()


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_keys_commands_write_private_keys_0600_and_fill_the_allow_list(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert runner.invoke(app, ["keys", "aggregator", "--dir", str(keys)]).exit_code == 0
    result = runner.invoke(app, ["keys", "client", "a", "b", "--dir", str(keys)])
    assert result.exit_code == 0, result.output
    layout = KeyLayout(keys)
    for private in [layout.update_key, layout.publish_key]:
        assert _mode(private) == 0o600
    for cid in "ab":
        paths = layout.client(cid)
        assert _mode(paths.signing_key) == 0o600
        assert _mode(paths.node_auth_key) == 0o600
        # never printed: no PEM or OpenSSH private material in the output
        assert "PRIVATE KEY" not in result.output
    read_exchange_key(layout.update_key)
    assert load_signing_public_key(layout.publish_pub) is not None
    allow = load_allow_list(layout.allow_list)
    assert set(allow) == {"a", "b"}
    signing = read_signing_key(layout.client("a").signing_key).public_key()
    assert allow["a"] == signing


def test_node_auth_key_is_openssh_p384_as_flower_loads_it(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    runner.invoke(app, ["keys", "client", "n1", "--dir", str(keys)])
    paths = KeyLayout(keys).client("n1")
    private = serialization.load_ssh_private_key(paths.node_auth_key.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.curve.name == "secp384r1"
    public = node_public_from_openssh(paths.node_auth_pub.read_bytes())
    assert uses_nist_ec_curve(public)
    assert public.public_numbers() == private.public_key().public_numbers()


def test_existing_keys_are_not_overwritten_without_force(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    runner.invoke(app, ["keys", "client", "a", "--dir", str(keys)])
    before = KeyLayout(keys).client("a").signing_key.read_bytes()
    again = runner.invoke(app, ["keys", "client", "a", "--dir", str(keys)])
    assert again.exit_code == 2
    assert KeyLayout(keys).client("a").signing_key.read_bytes() == before
    forced = runner.invoke(app, ["keys", "client", "a", "--dir", str(keys), "--force"])
    assert forced.exit_code == 0
    assert KeyLayout(keys).client("a").signing_key.read_bytes() != before


def test_revoke_and_unallowed_clients(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    runner.invoke(app, ["keys", "client", "a", "b", "--dir", str(keys)])
    runner.invoke(app, ["keys", "client", "rogue", "--dir", str(keys), "--no-allow"])
    layout = KeyLayout(keys)
    assert set(load_allow_list(layout.allow_list)) == {"a", "b"}
    assert revoke_client(layout, "a") is True
    assert revoke_client(layout, "a") is False
    assert set(load_allow_list(layout.allow_list)) == {"b"}
    assert runner.invoke(app, ["keys", "allow", "rogue", "--dir", str(keys)]).exit_code == 0
    assert set(load_allow_list(layout.allow_list)) == {"b", "rogue"}


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "-lead", "x" * 65])
def test_client_ids_are_safe_tokens(bad: str) -> None:
    with pytest.raises(KeyFileError):
        check_client_id(bad)


def test_server_certificate_has_the_sans_and_chains_to_the_ca(tmp_path: Path) -> None:
    layout = KeyLayout(tmp_path / "keys")
    create_certs(layout, ["localhost", "agg.example.org", "127.0.0.1", "::1"])
    assert _mode(layout.ca_key) == 0o600 and _mode(layout.server_key) == 0o600
    names = certificate_names(layout.server_cert.read_bytes())
    assert set(names) == {"localhost", "agg.example.org", "127.0.0.1", "::1"}
    cert = x509.load_pem_x509_certificate(layout.server_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    # the standard library's TLS stack accepts the pair
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(layout.server_cert, layout.server_key)


def test_a_second_server_certificate_reuses_the_ca(tmp_path: Path) -> None:
    layout = KeyLayout(tmp_path / "keys")
    create_certs(layout, ["a.example"])
    ca_before = layout.ca_cert.read_bytes()
    create_certs(layout, ["b.example"])
    assert layout.ca_cert.read_bytes() == ca_before
    assert certificate_names(layout.server_cert.read_bytes()) == ["b.example"]
    create_certs(layout, ["c.example"], new_ca=True)
    assert layout.ca_cert.read_bytes() != ca_before


def test_certs_command_needs_a_name(tmp_path: Path) -> None:
    result = runner.invoke(app, ["certs", "--dir", str(tmp_path)])
    assert result.exit_code != 0
