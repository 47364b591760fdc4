"""Every fuzz target by name: what the hypothesis tests parametrize over and ``.ci/fuzz`` runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fuzzlib import Target
from targets_emulator import HttpTarget, ServiceTarget
from targets_keys import AlibabaBlobTarget, InstanceBlobTarget, LocalBlobTarget, Pkcs11BlobTarget
from targets_lines import JsonlTarget
from targets_objects import ObjectMetadataTarget, ObjectTarget
from targets_vault import EnvelopeV2Target, VaultEntryTarget
from targets_values import (
    CellsMetadataTarget,
    EnvelopeTarget,
    JournalLineTarget,
    KeyTextTarget,
    KeyUriTarget,
    TextManyTarget,
    ThriftTarget,
)

#: name -> how to build the target in a fresh working directory
TARGETS: dict[str, Callable[[Path], Target]] = {
    "envelope": lambda _: EnvelopeTarget(),
    "envelope_text_many": lambda _: TextManyTarget(),
    "envelope_v2": lambda _: EnvelopeV2Target(),
    "vault_entry": lambda _: VaultEntryTarget(),
    "object_stream": ObjectTarget,
    "object_metadata": lambda _: ObjectMetadataTarget(),
    "parquet_cells_metadata": lambda _: CellsMetadataTarget(),
    "pme_key_text": lambda _: KeyTextTarget(),
    "parquet_thrift": lambda _: ThriftTarget(),
    "key_uri": lambda _: KeyUriTarget(),
    "jsonl_lines": lambda _: JsonlTarget(),
    "rotation_journal": lambda _: JournalLineTarget(),
    "kms_blob": LocalBlobTarget,
    "pkcs11_blob": lambda _: Pkcs11BlobTarget(),
    "alikms_blob": lambda _: AlibabaBlobTarget(),
    "instance_blob": lambda _: InstanceBlobTarget(),
    "emulator_request": lambda d: ServiceTarget(d, signed=False),
    "emulator_signed": lambda d: ServiceTarget(d, signed=True),
    "emulator_http": HttpTarget,
}
