"""flux-secu: AI video surveillance of waste-recycling centres on a Ray cluster."""

__version__ = "0.1.0"
