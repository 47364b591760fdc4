"""Moved to ``kmsbeam.transforms.journal_fs`` (this name goes once no module imports it)."""

from kmsbeam.transforms.journal_fs import BeamJournalStore, journal_store

__all__ = ["BeamJournalStore", "journal_store"]
