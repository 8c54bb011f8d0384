"""A private CA with server and client certificates, for TLS between the portal's workers and the model server on a
developer's machine, in tests and in benchmarks (a cluster gets its certificates from cert-manager or its PKI)."""

import dataclasses
import datetime as dt
import ipaddress
import os


@dataclasses.dataclass(frozen=True)
class Issued:
    certificate: str  # PEM file paths
    key: str


def write_development_pki(folder: str, server_names: tuple[str, ...] = ("localhost",),
                          clients: tuple[str, ...] = ("report-worker",), days: int = 7) -> dict[str, Issued]:
    """Writes ``ca`` (self-signed), ``server`` (for ``server_names`` and 127.0.0.1) and one certificate per client
    name into ``folder``; returns them by name."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    os.makedirs(folder, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def issue(name: str, signer=None, alt_names=()):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        signing_key, issuer = (signer[0], signer[1].subject) if signer else (key, subject)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=signer is None, path_length=None), critical=True))
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(alt_names)), critical=False)
        certificate = builder.sign(signing_key, hashes.SHA256())
        paths = Issued(os.path.join(folder, f"{name}.pem"), os.path.join(folder, f"{name}.key"))
        with open(paths.key, "wb") as handle:
            handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        os.chmod(paths.key, 0o600)
        with open(paths.certificate, "wb") as handle:
            handle.write(certificate.public_bytes(serialization.Encoding.PEM))
        return key, certificate, paths

    ca_key, ca_certificate, ca = issue("radassist-development-ca")
    issued = {"ca": ca}
    server_alt = [x509.DNSName(n) for n in server_names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    issued["server"] = issue("model-server", (ca_key, ca_certificate), server_alt)[2]
    for client in clients:
        issued[client] = issue(client, (ca_key, ca_certificate), [x509.DNSName(client)])[2]
    return issued
