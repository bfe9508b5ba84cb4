"""Long memory: what the history window drops, folded into a rolling summary per session."""
