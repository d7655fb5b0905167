"""MongoDB query semantics in pure Python: paths, projection, filters, sorting, SQL form."""
