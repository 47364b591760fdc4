"""The DoFn base that puts a KMS call budget in force in its worker process (``kmsbeam.keys.budget``)."""

from __future__ import annotations

import apache_beam as beam

from kmsbeam.keys.budget import KmsBudget, install_kms_budget, uninstall_kms_budget

__all__ = ["BudgetedDoFn"]


class BudgetedDoFn(beam.DoFn):
    """A DoFn carrying ``self._budget`` (a picklable ``KmsBudget`` or None): ``_install_budget()``
    (from ``setup()``) installs it in the worker process once, ``teardown()`` removes it."""

    _budget: KmsBudget | None = None  # class defaults: DoFns pickled without them have none
    _budget_installed: bool = False

    def _install_budget(self) -> None:
        if self._budget is not None and not self._budget_installed:
            install_kms_budget(self._budget)
            self._budget_installed = True

    def teardown(self) -> None:
        if self._budget_installed and self._budget is not None:
            uninstall_kms_budget(self._budget)
        self._budget_installed = False
