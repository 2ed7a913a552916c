"""The two signals and what feeds them: behavioral (CCS, with sessions, views and play events),
contextual, player events, and merging them into key-values."""
