"""Object-store server fixtures (filled in by the store-servers work)."""
