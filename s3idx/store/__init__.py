"""Object stores behind one protocol (see ``base``)."""
