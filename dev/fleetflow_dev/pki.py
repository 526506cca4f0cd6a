"""Certificates for one local cluster, as controller-runtime's envtest makes them.

Three separate authorities, ECDSA P-256: one signs the API server's serving certificate, one
signs client certificates (the admin identity, group ``system:masters``), and one key signs
service-account tokens. Keys are written owner-only; they never leave the fleet directory
except embedded in the kubeconfig, which is owner-only too.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleetflow.files import write_atomic

VALIDITY = dt.timedelta(days=365)
PRIVATE, PUBLIC = 0o600, 0o644  # keys, certificates


@dataclass(frozen=True)
class ClusterPKI:
    """Paths of one cluster's certificates and keys."""

    directory: Path

    @property
    def serving_ca(self) -> Path:
        return self.directory / "serving-ca.crt"

    @property
    def serving_ca_key(self) -> Path:
        return self.directory / "serving-ca.key"

    @property
    def serving_cert(self) -> Path:  # kube-apiserver finds apiserver.crt/.key in --cert-dir
        return self.directory / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def client_ca(self) -> Path:
        return self.directory / "client-ca.crt"

    @property
    def client_ca_key(self) -> Path:
        return self.directory / "client-ca.key"

    @property
    def admin_cert(self) -> Path:
        return self.directory / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.directory / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.directory / "sa.pub"

    def complete(self) -> bool:
        needed = (
            self.serving_ca,
            self.serving_cert,
            self.serving_key,
            self.client_ca,
            self.client_ca_key,
            self.admin_cert,
            self.admin_key,
            self.sa_key,
            self.sa_pub,
        )
        return all(p.exists() for p in needed)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    name = _name(common_name)
    cert = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    subject: x509.Name,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    builder = (
        _builder(subject, ca[0].subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca[1], hashes.SHA256()), key


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _serving_sans(extra_ips: tuple[str, ...]) -> list[x509.GeneralName]:
    names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    names.append("kubernetes.default.svc.cluster.local")
    ips = ["127.0.0.1", "10.0.0.1", *extra_ips]
    return [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]


def _covers(cert_path: Path, extra_ips: tuple[str, ...]) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return set(extra_ips) <= have


def ensure(directory: Path, cluster: str, extra_ips: tuple[str, ...] = ()) -> ClusterPKI:
    """Create the cluster's certificates unless a complete set already exists (kept across restarts).

    ``extra_ips`` are addresses the API server is also reached at (a node's: the host side of
    its veth, the ``kubernetes`` Service). A complete set whose serving certificate lacks one
    gets a new serving certificate, signed by the serving CA when its key was kept, else by a
    new serving CA (kubeconfigs are rewritten by ``up``; registered copies must be refreshed)."""
    pki = ClusterPKI(directory)
    if pki.complete():
        if _covers(pki.serving_cert, extra_ips):
            return pki
        _reissue_serving(pki, cluster, extra_ips)
        return pki
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    serving_ca = _ca(f"{cluster}-serving-ca")
    client_ca = _ca(f"{cluster}-client-ca")
    sans = _serving_sans(extra_ips)
    serving = _leaf(_name("kube-apiserver"), serving_ca, ExtendedKeyUsageOID.SERVER_AUTH, sans)
    write_atomic(pki.serving_ca_key, _pem_key(serving_ca[1]), PRIVATE)
    admin = _leaf(_name("admin", "system:masters"), client_ca, ExtendedKeyUsageOID.CLIENT_AUTH)
    sa_key = _key()
    write_atomic(pki.serving_ca, _pem_cert(serving_ca[0]), PUBLIC)
    write_atomic(pki.serving_cert, _pem_cert(serving[0]), PUBLIC)
    write_atomic(pki.serving_key, _pem_key(serving[1]), PRIVATE)
    write_atomic(pki.client_ca, _pem_cert(client_ca[0]), PUBLIC)
    write_atomic(pki.client_ca_key, _pem_key(client_ca[1]), PRIVATE)
    write_atomic(pki.admin_cert, _pem_cert(admin[0]), PUBLIC)
    write_atomic(pki.admin_key, _pem_key(admin[1]), PRIVATE)
    write_atomic(pki.sa_key, _pem_key(sa_key), PRIVATE)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    write_atomic(pki.sa_pub, sa_key.public_key().public_bytes(serialization.Encoding.PEM, public), PUBLIC)
    return pki


def _reissue_serving(pki: ClusterPKI, cluster: str, extra_ips: tuple[str, ...]) -> None:
    if pki.serving_ca_key.exists():
        key = serialization.load_pem_private_key(pki.serving_ca_key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{pki.serving_ca_key} is not an ECDSA key")
        serving_ca = (x509.load_pem_x509_certificate(pki.serving_ca.read_bytes()), key)
    else:
        serving_ca = _ca(f"{cluster}-serving-ca")
        write_atomic(pki.serving_ca_key, _pem_key(serving_ca[1]), PRIVATE)
        write_atomic(pki.serving_ca, _pem_cert(serving_ca[0]), PUBLIC)
    sans = _serving_sans(extra_ips)
    serving = _leaf(_name("kube-apiserver"), serving_ca, ExtendedKeyUsageOID.SERVER_AUTH, sans)
    write_atomic(pki.serving_cert, _pem_cert(serving[0]), PUBLIC)
    write_atomic(pki.serving_key, _pem_key(serving[1]), PRIVATE)
