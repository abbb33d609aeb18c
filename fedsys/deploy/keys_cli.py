"""``fedsys keys`` and ``fedsys certs``: make the key material a deployment needs.

Every private key is written with mode 0600 (atomically, never over an existing file unless
``--force``), and only file paths and public fingerprints are printed, never key bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedsys.crypto.keys import (
    generate_exchange_key,
    generate_signing_key,
    load_allow_list,
    public_to_raw,
    read_secret_file,
    read_signing_key,
    save_allow_list,
    write_private_key,
    write_public_key,
    write_secret_file,
)
from fedsys.deploy.layout import KeyLayout, check_client_id
from fedsys.deploy.pki import CertificatePair, generate_node_auth_key, make_ca, make_server_cert
from fedsys.errors import FedsysError, KeyFileError

keys_app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Create and manage deployment keys."
)
out = Console(stderr=True, soft_wrap=True, highlight=False)

KeysDir = Annotated[Path, typer.Option("--dir", "-d", help="Keys directory.")]
Force = Annotated[bool, typer.Option("--force", help="Replace existing key files.")]


def _fingerprint(public: bytes) -> str:
    return "sha256:" + hashlib.sha256(public).hexdigest()[:16]


def _fail(exc: FedsysError) -> typer.Exit:
    out.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


def create_aggregator_keys(layout: KeyLayout, *, force: bool = False) -> None:
    """The update-encryption (X25519) and publishing (Ed25519) keys, and an empty allow-list."""
    layout.aggregator.mkdir(parents=True, exist_ok=True)
    update = generate_exchange_key()
    publish = generate_signing_key()
    write_private_key(layout.update_key, update, overwrite=force)
    write_public_key(layout.update_pub, update.public_key(), overwrite=True)
    write_private_key(layout.publish_key, publish, overwrite=force)
    write_public_key(layout.publish_pub, publish.public_key(), overwrite=True)
    if not layout.allow_list.exists():
        save_allow_list(layout.allow_list, {})


def create_client_keys(
    layout: KeyLayout, client_id: str, *, force: bool = False, allow: bool = True
) -> str:
    """A client's update-signing and SuperNode keys; with ``allow``, add it to the allow-list.

    Returns the fingerprint of the new signing key.
    """
    paths = layout.client(client_id)
    paths.dir.mkdir(parents=True, exist_ok=True)
    signing = generate_signing_key()
    auth = generate_node_auth_key(comment=f"fedsys-{client_id}")
    write_private_key(paths.signing_key, signing, overwrite=force)
    write_public_key(paths.signing_pub, signing.public_key(), overwrite=True)
    write_secret_file(paths.node_auth_key, auth.private_openssh, overwrite=force)
    paths.node_auth_pub.write_bytes(auth.public_openssh)
    if allow:
        allow_client(layout, client_id)
    return _fingerprint(public_to_raw(signing.public_key()))


def allow_client(layout: KeyLayout, client_id: str) -> None:
    """Add (or refresh) ``client_id``'s signing key in the aggregator's allow-list."""
    public = read_signing_key(layout.client(client_id).signing_key).public_key()
    current = load_allow_list(layout.allow_list) if layout.allow_list.exists() else {}
    current[client_id] = public
    layout.allow_list.parent.mkdir(parents=True, exist_ok=True)
    save_allow_list(layout.allow_list, current)


def revoke_client(layout: KeyLayout, client_id: str) -> bool:
    """Remove ``client_id`` from the allow-list; False when it was not there."""
    current = load_allow_list(layout.allow_list) if layout.allow_list.exists() else {}
    if current.pop(check_client_id(client_id), None) is None:
        return False
    save_allow_list(layout.allow_list, current)
    return True


@keys_app.command("aggregator")
def aggregator_cmd(keys_dir: KeysDir = Path("keys"), force: Force = False) -> None:
    """Create the aggregator's update-encryption and model-publishing keys."""
    layout = KeyLayout(keys_dir)
    try:
        create_aggregator_keys(layout, force=force)
    except FedsysError as exc:
        raise _fail(exc) from None
    out.print(f"aggregator keys in {layout.aggregator} (private keys 0600)")


@keys_app.command("client")
def client_cmd(
    client_ids: Annotated[list[str], typer.Argument(help="One or more client ids.")],
    keys_dir: KeysDir = Path("keys"),
    force: Force = False,
    allow: Annotated[
        bool, typer.Option("--allow/--no-allow", help="Add to the aggregator's allow-list.")
    ] = True,
) -> None:
    """Create clients' update-signing and SuperNode authentication keys."""
    layout = KeyLayout(keys_dir)
    for cid in client_ids:
        try:
            fp = create_client_keys(layout, cid, force=force, allow=allow)
        except FedsysError as exc:
            raise _fail(exc) from None
        note = "allow-listed" if allow else "not allow-listed"
        out.print(f"client {cid}: keys in {layout.client(cid).dir}, signing key {fp} ({note})")


@keys_app.command("allow")
def allow_cmd(
    client_id: Annotated[str, typer.Argument(help="Client id.")], keys_dir: KeysDir = Path("keys")
) -> None:
    """Add an existing client's signing key to the allow-list (after rotating it, too)."""
    try:
        allow_client(KeyLayout(keys_dir), client_id)
    except FedsysError as exc:
        raise _fail(exc) from None
    out.print(f"client {client_id} allow-listed")


@keys_app.command("revoke")
def revoke_cmd(
    client_id: Annotated[str, typer.Argument(help="Client id.")], keys_dir: KeysDir = Path("keys")
) -> None:
    """Remove a client from the allow-list (unregister its SuperNode key too, see the runbook)."""
    try:
        removed = revoke_client(KeyLayout(keys_dir), client_id)
    except FedsysError as exc:
        raise _fail(exc) from None
    out.print(f"client {client_id} {'removed' if removed else 'was not'} on the allow-list")


def create_certs(
    layout: KeyLayout, names: list[str], *, new_ca: bool = False, days: int = 825
) -> None:
    """Reuse the CA in ``layout`` (or make one) and issue a server certificate for ``names``."""
    layout.tls.mkdir(parents=True, exist_ok=True)
    if new_ca or not layout.ca_cert.exists():
        ca = make_ca()
        write_secret_file(layout.ca_key, ca.key_pem, overwrite=True)
        layout.ca_cert.write_bytes(ca.cert_pem)
    else:
        ca = CertificatePair(layout.ca_cert.read_bytes(), read_secret_file(layout.ca_key))
    server = make_server_cert(ca, names, days=days)
    write_secret_file(layout.server_key, server.key_pem, overwrite=True)
    layout.server_cert.write_bytes(server.cert_pem)


def certs_cmd(
    names: Annotated[
        list[str],
        typer.Option(
            "--name", "-n", help="DNS name or IP the SuperLink is reached at (repeatable)."
        ),
    ],
    keys_dir: KeysDir = Path("keys"),
    new_ca: Annotated[bool, typer.Option("--new-ca", help="Replace the CA as well.")] = False,
    days: Annotated[int, typer.Option("--days", min=1, help="Server certificate validity.")] = 825,
) -> None:
    """Create a CA (once) and a SuperLink TLS certificate for the given names."""
    layout = KeyLayout(keys_dir)
    try:
        create_certs(layout, names, new_ca=new_ca, days=days)
    except (FedsysError, OSError) as exc:
        raise _fail(exc if isinstance(exc, FedsysError) else KeyFileError(str(exc))) from None
    out.print(
        f"CA {layout.ca_cert}; server certificate {layout.server_cert} for {', '.join(names)}"
    )
