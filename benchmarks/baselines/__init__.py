"""What cohortkv is measured against: no enrichment, and the naive Direct API integration."""
