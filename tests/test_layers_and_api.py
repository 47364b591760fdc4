"""Project rules: the core never imports Beam, and the public API is pinned."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import kmsbeam
import kmsbeam.transforms

ROOT = Path(__file__).parent.parent


def test_core_never_imports_apache_beam() -> None:
    for path in (ROOT / "kmsbeam").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])  # fmt: skip
            assert not any(n.split(".")[0] == "apache_beam" for n in names), path
    code = "import sys, kmsbeam, kmsbeam.kms; print('apache_beam' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_transforms_never_name_a_concrete_key_source() -> None:
    for path in (ROOT / "transforms").rglob("*.py"):
        text = path.read_text()
        assert "LocalKeySource" not in text and "kmsbeam.keys.local" not in text, path


PUBLIC = {
    "DEFAULT_KEY_URI", "AccessDeniedError", "AuthenticationError", "ConfigurationError", "DataKey",
    "DataKeyCache", "DataKeyPolicy", "FieldDecryptor", "FieldEncryptor", "FieldPath", "FormatError",
    "KeyDisabledError", "KeyInfo", "KeyNotFoundError", "KeySource", "KeySourceError",
    "KeySourceUnavailableError", "KeyUri", "KmsBeamError", "MalformedValueError", "RecordDecryptor",
    "RecordEncryptor", "RecordError", "TrustedKeySources", "UntrustedKeySourceError", "__version__", "canonical_context", "check_context",
    "decode_value", "encode_value", "failure_reason", "keystore_home", "open_key_source",
    "parse_key_uri", "parse_paths", "shared_cache", "call_counts", "forget_data_keys",
}  # fmt: skip


def test_public_api_is_pinned() -> None:
    assert set(kmsbeam.__all__) == PUBLIC
    assert all(hasattr(kmsbeam, n) for n in kmsbeam.__all__)
    assert set(kmsbeam.transforms.__all__) == {
        "DEAD_LETTER", "DecryptFields", "DecryptRecords", "EncryptFields", "EncryptRecords",
        "DecryptObjects", "EncryptObjects", "OssFileSystem", "OssOptions",
        "DecryptCells", "EncryptCells", "ReadEncryptedParquet", "WriteEncryptedParquet",
        "cells_schema", "ReencryptFields", "ReencryptRecords", "RewrapDataKeys", "create_local_keys",
        "Encoding", "RewrapMode"}  # fmt: skip
    assert all(hasattr(kmsbeam.transforms, n) for n in kmsbeam.transforms.__all__)


def test_error_tree() -> None:
    e = kmsbeam
    assert issubclass(e.MalformedValueError, e.AuthenticationError)
    assert issubclass(e.KeyDisabledError, e.KeyNotFoundError)
    assert issubclass(e.ConfigurationError, ValueError)
    assert e.KeySourceUnavailableError.retryable and not e.AccessDeniedError.retryable
    assert str(e.AuthenticationError()) == str(e.AuthenticationError(code="X"))


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in ("transforms", "pipelines"):
        parts.insert(0, "kmsbeam")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _private_owner(dotted: str) -> str | None:
    """Who may import ``dotted``: the package of a private module (``a.b._c``: ``a.b``),
    the module of a private name (``a.b.c._name``: ``a.b.c``); None if it is public."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
            prefix = ".".join(parts[:i])
            return prefix
    return None


def test_no_module_imports_another_packages_private_modules_or_names() -> None:
    """``a.b._c`` belongs to package ``a.b`` (and its subpackages), ``a.b.c._name`` to
    module ``a.b.c``: what two packages share is public."""
    bad = []
    for top in ("kmsbeam", "transforms", "pipelines"):
        for path in (ROOT / top).rglob("*.py"):
            importer = _module_name(path)
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    targets = [f"{node.module}.{a.name}" for a in node.names]
                else:
                    continue
                for target in targets:
                    if not target.startswith("kmsbeam."):
                        continue
                    owner = _private_owner(target)
                    if owner is not None and not (importer + ".").startswith(owner + "."):
                        bad.append(f"{importer} imports {target}")
    assert not bad, "\n".join(sorted(bad))


def _beam_private_uses(path: Path) -> list[str]:
    """``apache_beam`` private names that ``path`` imports or reaches through an attribute."""
    tree = ast.parse(path.read_text(), str(path))
    aliases: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            pairs = [(a.name, (a.asname or a.name).split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            pairs = [(f"{node.module}.{a.name}", a.asname or a.name) for a in node.names]
        else:
            continue
        for dotted, alias in pairs:
            if dotted.split(".")[0] == "apache_beam":
                aliases.add(alias)
                if _private_owner(dotted) is not None:
                    found.append(dotted)
    for node in ast.walk(tree):
        chain, inner = [], node
        while isinstance(inner, ast.Attribute):
            chain.append(inner.attr)
            inner = inner.value
        if isinstance(inner, ast.Name) and inner.id in aliases and chain:
            if _private_owner(".".join(reversed(chain))) is not None:
                found.append(".".join([inner.id, *reversed(chain)]))
    return found


def test_no_module_uses_a_private_name_of_apache_beam() -> None:
    """Beam's private classes and functions (``parquetio._ParquetSink``) change without notice."""
    bad = {f"{_module_name(p)}: {name}" for top in ("kmsbeam", "transforms", "pipelines")
           for p in (ROOT / top).rglob("*.py") for name in _beam_private_uses(p)}  # fmt: skip
    assert not bad, "\n".join(sorted(bad))




def test_the_beam_private_name_check_sees_imports_and_attributes(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import apache_beam as beam\nfrom apache_beam.io import parquetio\n"
                      "from apache_beam.io.filebasedsink import FileBasedSink\n"
                      "from apache_beam.io.parquetio import _ParquetSink\n"
                      "a = parquetio._ParquetSink\nb = beam.io.parquetio._create_parquet_sink\n"
                      "c = FileBasedSink._template_to_format\nd = beam.io.WriteToParquet\n")  # fmt: skip
    assert sorted(set(_beam_private_uses(source))) == [
        "FileBasedSink._template_to_format", "apache_beam.io.parquetio._ParquetSink",
        "beam.io.parquetio._create_parquet_sink", "parquetio._ParquetSink"]  # fmt: skip
