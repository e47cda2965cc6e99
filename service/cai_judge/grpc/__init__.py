"""The gRPC transport: the same services as HTTP, another wire (DESIGN.md §8)."""
