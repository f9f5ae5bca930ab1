"""Hooks for other people's training loops. Each submodule imports its framework only when imported itself
(``vant.integrations.lightning`` needs Lightning: ``pip install "vant[lightning]"``)."""
