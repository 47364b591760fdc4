"""``kmsbeam rotate``: the rotation backfill job (``job``) and what it needs: its command
line (``cmd``), filesystem moves (``fs``), lock, state, report and verification, and the
format-specific parts (``cells``, ``pme``, ``pme_rewrite``, ``oss``).
"""
