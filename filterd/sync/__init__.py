"""Authority sync: the protocol documents (model) and the operator-side client."""
