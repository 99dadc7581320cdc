"""The domain: plain functions and classes that receive a session, store, clock and keyring."""
