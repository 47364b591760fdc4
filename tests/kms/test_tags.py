"""TagResource / UntagResource / ListResourceTags with Alibaba's limits, on a real keystore."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmsbeam.errors import ConfigurationError, KeyNotFoundError
from kmsbeam.kms import KeyStore, KmsEngine


def _invalid(call: object, *args: object) -> None:
    with pytest.raises(ConfigurationError) as err:
        call(*args)  # type: ignore[operator]
    assert err.value.code == "InvalidParameter"


def test_tag_list_untag(engine: KmsEngine) -> None:
    key = engine.create_key().key_id
    engine.create_alias("alias/t", key)
    assert engine.list_resource_tags(key) == {}
    engine.tag_resource(key, {"team": "data", "env": "dev"})
    engine.tag_resource("alias/t", {"env": "prod", "empty": ""})  # overwrite, empty value
    tags = engine.list_resource_tags(key)
    assert tags == {"empty": "", "env": "prod", "team": "data"}
    assert list(tags) == ["empty", "env", "team"]  # sorted by tag key
    engine.untag_resource(key, ["team", "not-there"])
    assert engine.list_resource_tags(engine.describe_key(key).arn) == {"empty": "", "env": "prod"}
    other = engine.create_key().key_id
    assert engine.list_resource_tags(other) == {}  # tags belong to one key


def test_tag_limits(engine: KmsEngine) -> None:
    key = engine.create_key().key_id
    ok = "A-z0/9_.+=:@\\" + "x" * 115
    assert len(ok) == 128
    engine.tag_resource(key, {ok: ok})
    for bad in ({"": "v"}, {"k" * 129: "v"}, {"k": "v" * 129}, {"acs:k": "v"}, {"aliyun": "v"},
                {"aliyun-x": "v"}, {"a b": "v"}, {"k": "a b"}, {"k\u00e9": "v"}, {}):  # fmt: skip
        _invalid(engine.tag_resource, key, bad)
    engine.tag_resource(key, {"Acs:is-fine": "1", "x-aliyun": "2"})
    engine.untag_resource(key, [ok, "Acs:is-fine", "x-aliyun"])
    engine.tag_resource(key, {f"k{i}": str(i) for i in range(20)})
    _invalid(engine.tag_resource, key, {"k20": "20"})  # a 21st tag
    _invalid(engine.tag_resource, key, {f"n{i}": "" for i in range(21)})  # 21 in one call
    engine.tag_resource(key, {"k0": "changed"})  # changing a value adds nothing
    assert len(engine.list_resource_tags(key)) == 20
    for bad_keys in ([], ["k" * 129], [""]):
        _invalid(engine.untag_resource, key, bad_keys)
    for wrong in ("k0", [1], None):
        with pytest.raises(TypeError):
            engine.untag_resource(key, wrong)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        engine.tag_resource(key, [("k", "v")])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        engine.tag_resource(key, {"k": 1})  # type: ignore[dict-item]
    assert engine.list_resource_tags(key)["k0"] == "changed"


def test_tags_on_missing_keys_and_persistence(tmp_path: Path) -> None:
    engine = KmsEngine(KeyStore(tmp_path))
    for call in (
        lambda: engine.tag_resource("alias/none", {"k": "v"}),
        lambda: engine.untag_resource("0" * 36, ["k"]),
        lambda: engine.list_resource_tags("0" * 36),
    ):
        with pytest.raises(KeyNotFoundError):
            call()
    key = engine.create_key().key_id
    engine.tag_resource(key, {"kept": "yes"})
    engine.store.close()
    assert KmsEngine(KeyStore(tmp_path)).list_resource_tags(key) == {"kept": "yes"}
