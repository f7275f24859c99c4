"""kresume.operator."""
