"""Pure value types (no I/O, no logging)."""
