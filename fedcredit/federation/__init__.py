"""The Flower side: what crosses the wire (protocol), a bank's answers, the coordinator's rounds, run outputs."""
