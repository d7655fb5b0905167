"""MongoDB query semantics in pure Python: paths, projection, filters, sorting, and their SQL form."""
