"""The state schema in PostgreSQL: every statement on it is in this package, a module per state table.

Everything that makes a load resumable lives there and is written in the same transactions as the
rows it describes, so PostgreSQL's own atomicity gives exactly-once: a segment's position moves
only when its rows commit, a shard's when its changes do. Segments are leased (``FOR UPDATE SKIP
LOCKED``) so that any number of processes, on any number of hosts, share one queue without a
coordinator. ``status`` reads it all for `podyn-fast status`.
"""

from __future__ import annotations

from podyn_fast.state.changes import drop_changes, keep_change, next_changes
from podyn_fast.state.columns import add_columns, layout, lock_registry, plan_additions, registry
from podyn_fast.state.owners import Owner
from podyn_fast.state.register import register_table
from podyn_fast.state.rejects import Refused, RejectLike, record_rejects
from podyn_fast.state.schema import ensure_schema, require_schema, setup_lock
from podyn_fast.state.segments import (
    Claim,
    Progress,
    active_leases,
    checkpoint,
    claim,
    held_elsewhere,
    holds,
    owner_id,
    progress,
    release,
    renew,
)
from podyn_fast.state.shards import ShardCheckpoint, checkpoint_shard, shards
from podyn_fast.state.tables import (
    TableState,
    get_table,
    heartbeat,
    lock_follower,
    mark_load_start,
    phase,
    record_error,
    set_phase,
    set_stopped,
    set_stream,
    table_names,
)

__all__ = [
    "Claim",
    "Owner",
    "Progress",
    "Refused",
    "RejectLike",
    "ShardCheckpoint",
    "TableState",
    "active_leases",
    "add_columns",
    "checkpoint",
    "checkpoint_shard",
    "claim",
    "drop_changes",
    "ensure_schema",
    "get_table",
    "heartbeat",
    "held_elsewhere",
    "holds",
    "keep_change",
    "layout",
    "lock_follower",
    "lock_registry",
    "mark_load_start",
    "next_changes",
    "owner_id",
    "phase",
    "plan_additions",
    "progress",
    "record_error",
    "record_rejects",
    "register_table",
    "registry",
    "release",
    "renew",
    "require_schema",
    "set_phase",
    "set_stopped",
    "set_stream",
    "setup_lock",
    "shards",
    "table_names",
]
