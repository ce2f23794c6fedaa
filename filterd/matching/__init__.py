"""Pure matching: the compiled suffix index and the verdict rules over it."""
