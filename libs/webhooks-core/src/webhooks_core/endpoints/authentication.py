"""How an endpoint authenticates the platform: OAuth 2.0 client credentials and mutual TLS.

The rules the API checks an endpoint's credentials with and the delivery workers read them
by, in one place:

* OAuth 2.0 client credentials (RFC 6749 section 4.4): a token URL, a client id and secret,
  scopes, an audience, and how the client authenticates to the token URL
  (``client_secret_basic`` or ``client_secret_post``, RFC 6749 section 2.3.1);
* mutual TLS: a client certificate and its private key (PEM), and a CA bundle trusted for
  the endpoint's server instead of the system's.

The OAuth client secret and the private key are stored sealed (:func:`seal_secret`,
:mod:`webhooks_core.endpoints.sealing`), never returned by the API.  Certificates are parsed
with the ``cryptography`` package.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from webhooks_core.endpoints import sealing

OAuthAuthMethod = Literal["client_secret_basic", "client_secret_post"]
OAUTH_AUTH_METHODS: tuple[OAuthAuthMethod, ...] = ("client_secret_basic", "client_secret_post")

# A PEM longer than this is not one certificate chain an endpoint needs.
PEM_MAX_CHARS = 64 * 1024


class CredentialProblem(ValueError):
    """A credential that cannot be used; ``field`` names the input it came from."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def seal_secret(plaintext: str) -> str:
    """The stored form of an OAuth client secret or a private key (sealed)."""
    return sealing.seal(plaintext)


def unseal_secret(stored: str) -> str:
    """The plaintext of a value stored by :func:`seal_secret`."""
    return sealing.unseal(stored)


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What the API shows of a client certificate (its PEM is public)."""

    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    sha256_fingerprint: str

    def expired(self, now: datetime) -> bool:
        """True once ``now`` is past the certificate's end of validity."""
        return now >= self.not_after


def _certificates(pem: str, field: str) -> list[x509.Certificate]:
    if len(pem) > PEM_MAX_CHARS:
        raise CredentialProblem(f"must be at most {PEM_MAX_CHARS} characters", field)
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise CredentialProblem(
            "must be PEM certificates (-----BEGIN CERTIFICATE-----)", field
        ) from None
    return certificates


def certificate_info(pem: str, field: str = "tls.client_certificate") -> CertificateInfo:
    """The first certificate of a PEM chain, described; raises :class:`CredentialProblem`."""
    certificate = _certificates(pem, field)[0]
    return CertificateInfo(
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        sha256_fingerprint=hashlib.sha256(
            certificate.public_bytes(serialization.Encoding.DER)
        ).hexdigest(),
    )


def check_ca_bundle(pem: str, field: str = "tls.ca_bundle") -> int:
    """How many certificates a CA bundle holds; raises :class:`CredentialProblem`."""
    return len(_certificates(pem, field))


_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def check_client_certificate(
    certificate_pem: str, key_pem: str, now: datetime | None = None
) -> CertificateInfo:
    """Check a client certificate and its private key; describe the certificate.

    Refused (:class:`CredentialProblem`): unparsable PEM, an encrypted key (the platform has
    nowhere to keep its passphrase), a key that is not the certificate's, and a certificate
    already expired (nothing would accept it).
    """
    info = certificate_info(certificate_pem)
    certificate = _certificates(certificate_pem, "tls.client_certificate")[0]
    if len(key_pem) > PEM_MAX_CHARS:
        raise CredentialProblem(f"must be at most {PEM_MAX_CHARS} characters", "tls.client_key")
    try:
        key = serialization.load_pem_private_key(key_pem.encode("ascii"), password=None)
    except TypeError:
        raise CredentialProblem(
            "is encrypted: give the private key without a passphrase (it is stored sealed)",
            "tls.client_key",
        ) from None
    except (ValueError, UnicodeEncodeError):
        raise CredentialProblem(
            "must be a PEM private key (-----BEGIN PRIVATE KEY-----)", "tls.client_key"
        ) from None
    if not isinstance(key, _KEY_TYPES):
        raise CredentialProblem("must be an RSA, EC or EdDSA private key", "tls.client_key")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != certificate.public_key().public_bytes(
        der, public
    ):
        raise CredentialProblem(
            "is not the private key of the client certificate", "tls.client_key"
        )
    if info.expired(now or datetime.now(UTC)):
        raise CredentialProblem(
            f"expired at {info.not_after.isoformat()}: give a current certificate",
            "tls.client_certificate",
        )
    return info
