"""Running the app: credentials, bank files, a private local SuperLink, a local consortium, comparisons."""
