"""Access control: users, API tokens (stored hashed), roles per datastack, public datastacks, quotas,
the audit log, and the one global HTTP mechanism that enforces them (:mod:`neurolake.access.http`).

Public face (through the lake)::

    acc = lake.access
    acc.add_user("alice"); acc.grant("alice", "hemibrain", "editor")
    tok = acc.create_token("alice")["token"]        # shown once; stored as SHA-256
    acc.audit_log(action="feature.")
"""

from neurolake.access.core import ROLES, Access, Principal, hash_token, local_principal
from neurolake.access.quotas import Quotas

__all__ = ["ROLES", "Access", "Principal", "Quotas", "hash_token", "local_principal"]
