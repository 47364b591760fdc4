"""Rotation without Beam: rewrap data keys to a new master key (``rewrap``), the journal an
interrupted run resumes from (``journal``) and the per-process rewrap memo (``memo``).
"""
