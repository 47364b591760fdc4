"""``kmsbeam rotate``: one job (``job``) over one small rotator per format (``rotator`` is the
interface): ``records`` (fields and record datasets), ``cells``, ``pme`` and ``objects`` (OSS
exports). Also its command line (``cmd``), the lock (``lock``; ``lock_store`` keeps the lock
object), ``state`` (rotation manifest and journal names), OUTPUT preparation (``output``), the
records inventory (``report``) and the decrypt-back of a dataset (``verify``).
"""
