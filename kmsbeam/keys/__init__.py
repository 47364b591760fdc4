"""Key sources and what governs data keys: the KeySource protocol, key URIs, the scheme
registry that opens sources, the embedded ``local:`` keystore, the data-key policy, cache and
budget, the caller's trusted sources, and ``--require-key`` (strict).

The concrete remote sources live beside this package (``kmsbeam.alikms``,
``kmsbeam.pkcs11``); they register their URI schemes with ``kmsbeam.keys.registry``.
"""
