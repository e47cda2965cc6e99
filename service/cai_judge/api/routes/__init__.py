"""One thin APIRouter per feature: wire types in, a service call, wire types out."""
