"""The cold paths both backends share (see eventstream/_runtime/README)."""
