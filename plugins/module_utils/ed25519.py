# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Ed25519 signature verification in pure Python (RFC 8032, section 5.1).

Only verification: the ``federation_check`` module checks the self-signature
of a homeserver's published signing keys on hosts where neither PyNaCl nor
``cryptography`` may be installed. Written from the RFC's description:

* the curve is the twisted Edwards curve ``-x^2 + y^2 = 1 + d x^2 y^2`` over
  GF(p), ``p = 2^255 - 19``, ``d = -121665/121666``;
* points are handled in extended homogeneous coordinates ``(X, Y, Z, T)`` with
  ``x = X/Z``, ``y = Y/Z``, ``x*y = T/Z`` (section 5.1.4);
* a point is encoded as 32 bytes: ``y`` little-endian with the low bit of ``x``
  in the top bit of the last byte (sections 5.1.2 and 5.1.3);
* a signature ``R || S`` over message ``M`` with public key ``A`` is valid when
  ``S < L`` and ``[S]B = R + [k]A`` with ``k = SHA-512(R || A || M) mod L``
  (section 5.1.7, the cofactorless equation, which is what libsodium checks).

Not constant time; it only ever handles public data. Standard library only,
Python 3.8+.
"""

import hashlib

P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)  # a square root of -1 mod p

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def _inv(value):
    return pow(value, P - 2, P)


def _recover_x(y, sign):
    """x for the given y and low bit of x (RFC 8032, 5.1.3 steps 2-4); None if none."""
    if y >= P:
        return None
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    # Candidate root x = u v^3 (u v^7)^((p-5)/8).
    x = (u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P)) % P
    vxx = (v * x * x) % P
    if vxx == u:
        pass
    elif vxx == (-u) % P:
        x = (x * SQRT_M1) % P
    else:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return x


def _affine_to_extended(x, y):
    return (x, y, 1, (x * y) % P)


def _add(first, second):
    """Point addition in extended coordinates (RFC 8032, 5.1.4)."""
    x1, y1, z1, t1 = first
    x2, y2, z2, t2 = second
    a = ((y1 - x1) * (y2 - x2)) % P
    b = ((y1 + x1) * (y2 + x2)) % P
    c = (t1 * 2 * D * t2) % P
    dd = (z1 * 2 * z2) % P
    e = b - a
    f = dd - c
    g = dd + c
    h = b + a
    return ((e * f) % P, (g * h) % P, (f * g) % P, (e * h) % P)


def _double(point):
    """Point doubling in extended coordinates (RFC 8032, 5.1.4)."""
    x1, y1, z1, _t1 = point
    a = (x1 * x1) % P
    b = (y1 * y1) % P
    c = (2 * z1 * z1) % P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1)
    g = a - b
    f = c + g
    return ((e * f) % P, (g * h) % P, (f * g) % P, (e * h) % P)


NEUTRAL = (0, 1, 1, 0)


def _multiply(scalar, point):
    """[scalar]point by double-and-add from the most significant bit."""
    result = NEUTRAL
    for bit in reversed(range(scalar.bit_length())):
        result = _double(result)
        if (scalar >> bit) & 1:
            result = _add(result, point)
    return result


def _equal(first, second):
    """Projective equality: x1/z1 == x2/z2 and y1/z1 == y2/z2."""
    x1, y1, z1, _t1 = first
    x2, y2, z2, _t2 = second
    return (x1 * z2 - x2 * z1) % P == 0 and (y1 * z2 - y2 * z1) % P == 0


def decode_point(data):
    """Decode a 32-byte point encoding; returns extended coordinates or None."""
    if len(data) != 32:
        return None
    number = int.from_bytes(data, "little")
    sign = number >> 255
    y = number & ((1 << 255) - 1)
    x = _recover_x(y, sign)
    if x is None:
        return None
    return _affine_to_extended(x, y)


def encode_point(point):
    """Encode a point in extended coordinates as 32 bytes."""
    x, y, z, _t = point
    zinv = _inv(z)
    x = (x * zinv) % P
    y = (y * zinv) % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


_BASE_Y = (4 * _inv(5)) % P
BASE = _affine_to_extended(_recover_x(_BASE_Y, 0), _BASE_Y)


def verify(public_key, message, signature):
    """True when ``signature`` (64 bytes) over ``message`` verifies with ``public_key`` (32 bytes).

    Malformed keys or signatures give False, never an exception.
    """
    if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != PUBLIC_KEY_BYTES:
        return False
    if not isinstance(signature, (bytes, bytearray)) or len(signature) != SIGNATURE_BYTES:
        return False
    public_key = bytes(public_key)
    signature = bytes(signature)
    point_a = decode_point(public_key)
    if point_a is None:
        return False
    r_bytes = signature[:32]
    point_r = decode_point(r_bytes)
    if point_r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False
    k = int.from_bytes(hashlib.sha512(r_bytes + public_key + bytes(message)).digest(), "little") % L
    return _equal(_multiply(s, BASE), _add(point_r, _multiply(k, point_a)))
