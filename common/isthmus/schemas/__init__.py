"""JSON schemas of the isthmus OpenLineage facets (shipped with the package)."""
