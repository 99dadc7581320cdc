"""Cryptographic recipes for the e-voucher service (no Flask here).

tokens: QR tokens (ev1, jwt) and access tokens; keyring: signing keys, kids, JWKS, sealing;
sm2: SM2-with-SM3 signatures; fields: field encryption and blind indexes; pins: PIN hashing
and weak-PIN rules; idcard: resident ID numbers; masking: masked display of personal data.
"""

from .fields import FieldCipher, FieldError
from .idcard import age, birth_date, gender, normalize_id_number, validate_id_number
from .keyring import (
    ALGORITHMS,
    JOSE_ALG,
    Keyring,
    KeyringError,
    SigningKey,
    generate,
    seal_private,
    to_jwk,
    unseal_private,
)
from .masking import mask_id_number, mask_name, mask_phone
from .pins import PinHasher, is_weak_pin
from .tokens import (
    TokenClaims,
    TokenError,
    issue,
    issue_access,
    new_token_id,
    new_voucher_id,
    verify,
    verify_access,
)

__all__ = [
    "ALGORITHMS", "JOSE_ALG", "FieldCipher", "FieldError", "Keyring", "KeyringError", "PinHasher",
    "SigningKey", "TokenClaims", "TokenError", "age", "birth_date", "gender", "generate",
    "is_weak_pin", "issue", "issue_access", "mask_id_number", "mask_name", "mask_phone",
    "new_token_id", "new_voucher_id", "normalize_id_number", "seal_private", "to_jwk",
    "unseal_private", "validate_id_number", "verify", "verify_access",
]
