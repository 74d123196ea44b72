"""Result types: what a measure returns, and its versioned JSON form (no rendering here)."""
