"""One module per contender, each with describe/produce/latency/consume/e2e_* functions."""
