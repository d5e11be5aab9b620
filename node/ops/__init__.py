"""The operator's tools: the command line and the verifier. May import anything in node."""
