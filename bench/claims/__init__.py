"""Stage 1, what the papers claim: the registry of printed cells (<paper>.csv, papers.yaml) and the dataset catalog
the rows name, the headline claims (headlines.yaml), and the audit of the printed numbers against each other."""
