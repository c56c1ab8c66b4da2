# The types of eventstream/_build_info.py, which setup.py writes into each build (see setup.py).
COMPILED: bool
REASON: str
