"""The cold paths both backends share (docs/architecture.md says what each module owns)."""
