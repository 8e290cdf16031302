"""The certificates of a --tls stack: a CA made at each start (trustme), and one server
certificate it signs for the stack's loopback address, as PEM files in the stack's folder."""

from __future__ import annotations

from pathlib import Path

from pipeline.dev.stack.config import HOST, StackTls


class CertificatesUnavailable(RuntimeError):
    pass


def make_certificates(folder: Path, names: tuple[str, ...] = (HOST,)) -> StackTls:
    """Write a new CA and a server certificate for ``names`` to ``folder``; the key files are
    the owner's alone."""
    try:
        import trustme
        from cryptography.hazmat.primitives import serialization
    except ImportError as missing:
        raise CertificatesUnavailable(
            f"`pipeline stack up --tls` needs trustme ({missing}): pip install -e '.[test]'"
        ) from None
    tls = StackTls(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="shop-pipeline local stack")
    server = ca.issue_cert(*names)
    # Kafka's PEM keystore takes PKCS#8 keys only; trustme writes the traditional form.
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    chain = b"".join(blob.bytes() for blob in server.cert_chain_pems)
    ca.cert_pem.write_to_path(str(tls.ca))
    tls.chain.write_bytes(chain)
    for path, content in ((tls.key, pkcs8), (tls.keystore, pkcs8 + chain)):
        path.touch(mode=0o600)
        path.write_bytes(content)
    return tls
