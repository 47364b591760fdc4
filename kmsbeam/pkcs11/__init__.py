"""The PKCS#11 HSM key source (pkcs11: key URIs)."""
