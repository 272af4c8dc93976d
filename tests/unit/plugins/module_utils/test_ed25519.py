"""Ed25519 verification of federation_check (module_utils/federation.verify_ed25519, cryptography)
against the RFC 8032 (section 7.1) test vectors."""

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ansible_collections.mxedge.matrix.plugins.module_utils import federation as fed

# Group order of the base point (RFC 8032, 5.1): S must be below it.
L = 2 ** 252 + 27742317777372353535851937790883648493

# (secret key, public key, message, signature), hex, RFC 8032 section 7.1.
RFC8032_VECTORS = [
    pytest.param(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        id="test-1-empty",
    ),
    pytest.param(
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        id="test-2-one-byte",
    ),
    pytest.param(
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        id="test-3-two-bytes",
    ),
    pytest.param(
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
        id="test-sha-abc",
    ),
]


def sign(secret, message):
    """(raw public key, signature) for a 32-byte secret, by cryptography (tests only: the module only verifies)."""
    key = Ed25519PrivateKey.from_private_bytes(secret)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return public, key.sign(message)


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032_VECTORS)
def test_rfc8032_vectors_verify(secret, public, message, signature):
    assert fed.verify_ed25519(bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature))


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032_VECTORS)
def test_test_signer_reproduces_rfc8032(secret, public, message, signature):
    """The tests' signer (used for Matrix key documents) matches the RFC too."""
    assert sign(bytes.fromhex(secret), bytes.fromhex(message)) == (bytes.fromhex(public), bytes.fromhex(signature))


def _flip(data, index, bit=0):
    data = bytearray(data)
    data[index] ^= 1 << bit
    return bytes(data)


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032_VECTORS)
@pytest.mark.parametrize("tamper", ["message", "r", "s", "key", "s_plus_l"])
def test_tampered_inputs_do_not_verify(secret, public, message, signature, tamper):
    public, message, signature = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
    if tamper == "message":
        message = message + b"x"
    elif tamper == "r":
        signature = _flip(signature, 3)
    elif tamper == "s":
        signature = _flip(signature, 40)
    elif tamper == "key":
        public = _flip(public, 5)
    else:
        # Same S modulo L, not reduced: must be refused (malleability, RFC 8032 5.1.7 step 1).
        s = int.from_bytes(signature[32:], "little") + L
        if s >= 2 ** 256:
            pytest.skip("S + L does not fit in 32 bytes")
        signature = signature[:32] + s.to_bytes(32, "little")
    assert not fed.verify_ed25519(public, message, signature)


@pytest.mark.parametrize(
    ("public", "signature"),
    [
        pytest.param(b"", b"\0" * 64, id="empty-key"),
        pytest.param(b"\0" * 31, b"\0" * 64, id="short-key"),
        pytest.param(b"\0" * 32, b"\0" * 63, id="short-signature"),
        pytest.param(b"\xff" * 32, b"\0" * 64, id="y-not-below-p"),
        pytest.param("a" * 32, b"\0" * 64, id="key-not-bytes"),
    ],
)
def test_malformed_inputs_are_false_not_errors(public, signature):
    assert fed.verify_ed25519(public, b"message", signature) is False


def test_random_keys_round_trip():
    for seed in range(5):
        secret = hashlib.sha256(b"mxedge-%d" % seed).digest()
        message = b"message %d" % seed
        public, signature = sign(secret, message)
        assert fed.verify_ed25519(public, message, signature)
        assert not fed.verify_ed25519(public, message + b"!", signature)
