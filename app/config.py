"""Settings read from the environment. No secret has a default."""
from __future__ import annotations

import os
from dataclasses import dataclass, field


def _int(env: dict, name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer") from exc
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}")
    return value


DATABASE_SCHEMES = ("sqlite://", "postgresql://", "postgresql+psycopg://")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass
class Config:
    """Runtime settings; build with `Config.from_env()` or pass overrides in tests."""

    instance_path: str = ""
    database_url: str = ""
    redis_url: str | None = None
    sqlite_synchronous: str = "NORMAL"
    redis_prefix: str = "ev"
    master_key: bytes | None = None
    crypto_profile: str = "default"
    issuer: str = "evoucher"
    token_lifetime: int = 60
    token_format: str = "ev1"
    clock_skew: int = 5
    # How long a rotated-in signing key is published before it signs. The JWKS is served with
    # max-age=60 and docs/token-format.md tells verifiers to refetch it at least every 10
    # minutes: 15 minutes covers both with 5 to spare.
    key_lead_time: int = 900
    institution_token_ttl: int = 900
    holder_token_ttl: int = 900
    ec_token_ttl: int = 1800
    pin_time_cost: int = 3
    pin_memory_cost: int = 65536
    issue_rate_per_minute: int = 30
    scan_rate_per_minute: int = 600
    decode_rate_per_minute: int = 600
    pin_rate_per_minute: int = 10
    family_rate_per_minute: int = 5
    channel_rate_per_minute: int = 600
    max_body_bytes: int = 16 * 1024
    log_level: str = "INFO"
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict | None = None, **overrides) -> "Config":
        env = dict(os.environ if env is None else env)
        cfg = cls(
            instance_path=env.get("EVOUCHER_INSTANCE", ""),
            database_url=env.get("DATABASE_URL", ""),
            redis_url=env.get("REDIS_URL") or None,
            redis_prefix=env.get("REDIS_PREFIX", "ev"),
            sqlite_synchronous=env.get("SQLITE_SYNCHRONOUS", "NORMAL").upper(),
            crypto_profile=env.get("CRYPTO_PROFILE", "default"),
            issuer=env.get("EVOUCHER_ISSUER", "evoucher"),
            token_lifetime=_int(env, "TOKEN_LIFETIME", 60, 15, 300),
            token_format=env.get("TOKEN_FORMAT", "ev1"),
            key_lead_time=_int(env, "KEY_ROTATION_LEAD_TIME", 900, 120, 86400),
            pin_time_cost=_int(env, "PIN_HASH_TIME_COST", 3, 1, 20),
            pin_memory_cost=_int(env, "PIN_HASH_MEMORY_KIB", 65536, 8, 4 * 1024 * 1024),
            issue_rate_per_minute=_int(env, "RATE_ISSUE_PER_MINUTE", 30, 1, 100000),
            scan_rate_per_minute=_int(env, "RATE_SCAN_PER_MINUTE", 600, 1, 10000000),
            decode_rate_per_minute=_int(env, "RATE_DECODE_PER_MINUTE", 600, 1, 10000000),
            pin_rate_per_minute=_int(env, "RATE_PIN_PER_MINUTE", 10, 1, 1000),
            family_rate_per_minute=_int(env, "RATE_FAMILY_PER_MINUTE", 5, 1, 1000),
            channel_rate_per_minute=_int(env, "RATE_CHANNEL_PER_MINUTE", 600, 1, 10000000),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
        )
        key = env.get("EVOUCHER_MASTER_KEY")
        if key:
            cfg.master_key = decode_master_key(key)
        for name, value in overrides.items():
            setattr(cfg, name, value)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.crypto_profile not in ("default", "gm"):
            raise ValueError("CRYPTO_PROFILE must be 'default' or 'gm'")
        if self.sqlite_synchronous not in ("NORMAL", "FULL"):
            raise ValueError("SQLITE_SYNCHRONOUS must be NORMAL or FULL")
        if self.token_format not in ("ev1", "jwt"):
            raise ValueError("TOKEN_FORMAT must be 'ev1' or 'jwt'")
        if not 15 <= self.token_lifetime <= 300:
            raise ValueError("TOKEN_LIFETIME must be between 15 and 300 seconds")
        if not 120 <= self.key_lead_time <= 86400:
            raise ValueError("KEY_ROTATION_LEAD_TIME must be between 120 and 86400 seconds")
        # Only what the service runs on: a typo'd scheme fails here in words, not as a missing
        # driver module or an unparsable-URL exception deep in SQLAlchemy or redis-py.
        if self.database_url and not self.database_url.startswith(DATABASE_SCHEMES):
            raise ValueError("DATABASE_URL must start with sqlite:/// or postgresql://")
        if self.redis_url and not self.redis_url.startswith(REDIS_SCHEMES):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        _check_urls(self.database_url, self.redis_url)
        if self.log_level not in LOG_LEVELS:
            raise ValueError("LOG_LEVEL must be one of " + ", ".join(LOG_LEVELS))

    @property
    def signing_alg(self) -> str:
        """The algorithm of a key made without being asked for one."""
        return self.signing_algs[0]

    @property
    def signing_algs(self) -> tuple[str, ...]:
        """The algorithms the profile signs with: national cryptography (SM2) under gm, the
        international ones otherwise (Ed25519, or ES256 chosen with `keys rotate --alg`)."""
        return ("SM2",) if self.crypto_profile == "gm" else ("Ed25519", "ES256")


def _check_urls(database_url: str, redis_url: str | None) -> None:
    """Parse both URLs now, so a bad port is reported by name, not as `int()`'s complaint.
    No message repeats a URL: it may hold a password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    if database_url:
        try:
            make_url(database_url)
        except (ArgumentError, ValueError):
            raise ValueError("DATABASE_URL is not a valid database URL") from None
    if redis_url:
        from redis.connection import parse_url
        try:
            parse_url(redis_url)
        except ValueError as exc:
            raise ValueError(f"REDIS_URL is not a valid Redis URL: {exc}") from None


def decode_master_key(text: str) -> bytes:
    """Decode a 32-byte master key given as base64 or 64 hex digits."""
    import base64
    import binascii

    text = text.strip()
    try:
        raw = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError("EVOUCHER_MASTER_KEY must be 32 bytes, base64 or hex") from exc
    if len(raw) != 32:
        raise ValueError("EVOUCHER_MASTER_KEY must be 32 bytes, base64 or hex")
    return raw
