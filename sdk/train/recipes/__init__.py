"""One training recipe per model family (``python -m genrt.sdk.train.recipes.<name> --out DIR``)."""
