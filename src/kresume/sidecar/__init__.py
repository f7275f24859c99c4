"""kresume.sidecar."""
