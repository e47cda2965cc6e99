"""State behind the service (DESIGN.md §5): Redis when configured, process memory if not."""
