"""The DVC stages: ``generate``, ``train`` (one per dataset x family) and ``report``."""
