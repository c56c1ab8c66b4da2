"""What a consumer does when a record or a handler fails, or the log has a gap."""
