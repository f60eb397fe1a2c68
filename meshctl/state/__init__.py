"""meshctl.state: the state backend (lineage, serial, tables, last applied intent), lock, journal."""

from meshctl.state.journal import Journal, JournalRecord
from meshctl.state.lock import LockInfo, StateLock, read_lock, unlock
from meshctl.state.store import NodeRecord, State, load_state, save_state

__all__ = [
    "Journal",
    "JournalRecord",
    "LockInfo",
    "NodeRecord",
    "State",
    "StateLock",
    "load_state",
    "read_lock",
    "save_state",
    "unlock",
]
