"""kresume.store."""
