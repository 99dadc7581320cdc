"""Shared fixtures for the crypto tests: real keys, generated once per session."""

import pytest

from crypto import keyring


@pytest.fixture(scope="session")
def keys():
    """One signing key per algorithm."""
    return {alg: keyring.generate(alg) for alg in keyring.ALGORITHMS}


@pytest.fixture(scope="session")
def ring(keys):
    """A keyring holding every test key (Ed25519 current)."""
    return keyring.Keyring(keys.values(), keys["Ed25519"].kid)


@pytest.fixture(scope="session")
def master_key():
    return bytes(range(32))
