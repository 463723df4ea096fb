"""The feedback loop: analysts' dispositions of alerts become Redis labels and blocklists."""
