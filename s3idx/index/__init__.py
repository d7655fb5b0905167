"""Index backends behind one protocol (see ``base``)."""
