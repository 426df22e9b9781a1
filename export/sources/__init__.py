"""The model families the export reads, one module each: a family's library -> a ``Source``."""
