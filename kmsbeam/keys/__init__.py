"""Key sources and what governs data keys: the KeySource protocol, key URIs, the scheme
registry that opens sources, the embedded ``local:`` keystore, the data-key policy, cache and
budget, the caller's trusted sources, and ``--require-key`` (strict).

The concrete remote sources live beside this package (``kmsbeam.alikms``,
``kmsbeam.pkcs11``); ``kmsbeam.keys.registry`` names their openers and wrapped-key readers by
scheme and kind (loaded on first use), and ``register_scheme`` / ``register_kind`` add more.
"""
