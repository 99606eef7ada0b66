"""Model sources: each one builds an eager classifier (returning logits) and the metadata describing it."""
