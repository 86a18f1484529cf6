"""Golden-data generators. They run only inside the reference environment (see ../README.md)."""
