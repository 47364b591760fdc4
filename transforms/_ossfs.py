"""Moved to ``kmsbeam.transforms.ossfs`` (this name goes once no module imports it)."""

from kmsbeam.transforms.ossfs import OssFileSystem, OssOptions, config_from_options

__all__ = ["OssFileSystem", "OssOptions", "config_from_options"]
