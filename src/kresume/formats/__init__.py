"""kresume.formats."""
