"""Generated from protos/ by `make protos` (scripts/protos.sh); never edit by hand."""
