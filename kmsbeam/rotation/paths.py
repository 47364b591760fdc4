"""Which way a rewrap goes: the key source of the target decides it.

A rewrap moves a wrapped data key to another master key (rotation). Most key sources do it
without the data key leaving them; the KMS 3.0 instance gateway has no ReEncrypt, so there
the data key is unwrapped and wrapped again by the job (two calls, the data key in the
worker's memory between them; never the data). The rotation summaries name the path:

========================  =============================================  ==============
target key URI            path (``RewrapPath.calls``)                    data key
========================  =============================================  ==============
``local:``                ReEncrypt in the embedded keystore's engine    in the engine
``kms-emulator://``,      ReEncrypt (server side)                        never leaves
``alibaba-kms://``                                                       the KMS
``pkcs11:``               unwrap + wrap inside the HSM                   never leaves
                                                                         the HSM
``alibaba-kms-instance``  AdvanceDecrypt + AdvanceEncrypt                passes through
                                                                         the job
========================  =============================================  ==============
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RewrapPath", "rewrap_path"]


@dataclass(frozen=True)
class RewrapPath:
    """How one rewrap is done: ``calls`` names the key-source calls (``ReEncrypt``), ``per_key``
    how many each data key costs, ``side`` where the data key is while it happens."""

    calls: str
    per_key: int
    side: str

    def summary(self) -> str:
        """One line for a rotation summary, e.g. ``ReEncrypt (server side)``."""
        return f"{self.calls} ({self.side})"


_PATHS = {
    "local": RewrapPath("ReEncrypt", 1, "in the embedded keystore"),
    "kms-emulator": RewrapPath("ReEncrypt", 1, "server side"),
    "alibaba-kms": RewrapPath("ReEncrypt", 1, "server side"),
    "pkcs11": RewrapPath("unwrap + wrap", 1, "inside the HSM"),
    "alibaba-kms-instance": RewrapPath("AdvanceDecrypt + AdvanceEncrypt", 2,
                                       "client side: the instance API has no ReEncrypt"),
}  # fmt: skip


def rewrap_path(target_key_uri: str) -> RewrapPath:
    """The path a rewrap to ``target_key_uri`` takes (by its scheme; other schemes: a
    ``rewrap`` of their source, named as such)."""
    scheme = target_key_uri.partition(":")[0]
    return _PATHS.get(scheme, RewrapPath("rewrap", 1, f"by the {scheme} key source"))
