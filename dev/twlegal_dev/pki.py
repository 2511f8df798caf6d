"""Certificates and keys for a local control plane (a throwaway CA; never for production)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


@dataclass(frozen=True)
class Pki:
    """File paths of the local control plane's certificates."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def client(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.crt", self.dir / f"{name}.key"

    def issue_client(self, name: str, common_name: str, organization: str | None = None) -> tuple[Path, Path]:
        """A client certificate signed by this CA (kubelet, kube-proxy, apiserver-to-kubelet), once."""
        cert, key = self.client(name)
        if not cert.exists():
            ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
            ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
            _issue(ca, ca_key, cert, key, _name(common_name, organization), server=False)
        return cert, key


def _issue(
    ca: x509.Certificate,
    ca_key,
    cert_path: Path,
    key_path: Path,
    subject: x509.Name,
    *,
    server: bool,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> None:
    now = dt.datetime.now(dt.UTC)
    key = _key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    if dns or ips:
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert_path.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)


SERVING_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


def _serving_ips(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}


def create(directory: Path, *, ips: tuple[str, ...] = ()) -> Pki:
    """A CA, the apiserver's serving cert (for 127.0.0.1 and `ips`: the `kubernetes` Service IP,
    the address a node dials), an admin client cert and the service-account key pair. Kept when
    they exist; the serving cert is issued again if it lacks one of `ips` (a cluster made before
    its network had these addresses)."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    serving_ips = tuple(dict.fromkeys(("127.0.0.1", *ips)))
    if pki.sa_pub.exists():
        if not set(serving_ips) <= _serving_ips(pki.serving_cert):
            ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
            ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
            _issue(
                ca,
                ca_key,
                pki.serving_cert,
                pki.serving_key,
                _name("kube-apiserver"),
                server=True,
                dns=SERVING_DNS,
                ips=serving_ips,
            )
        return pki
    now = dt.datetime.now(dt.UTC)
    ca_key = _key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("twlegal-dev-ca"))
        .issuer_name(_name("twlegal-dev-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.ca_key, ca_key)

    _issue(
        ca,
        ca_key,
        pki.serving_cert,
        pki.serving_key,
        _name("kube-apiserver"),
        server=True,
        dns=SERVING_DNS,
        ips=serving_ips,
    )
    _issue(ca, ca_key, pki.admin_cert, pki.admin_key, _name("admin", "system:masters"), server=False)
    sa_key = _key()
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pki
