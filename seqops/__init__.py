"""seqops: an orchestrated MLOps pipeline for user-behaviour sequences."""
