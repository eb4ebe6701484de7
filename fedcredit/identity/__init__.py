"""Who a bank is: the consortium roster of signing keys, signatures on what a bank sends, its egress log.

Below `federation` (which checks and makes signatures) and above `core`: the
roster is a file that ships in the app, each bank's private signing key stays
at the bank.
"""
