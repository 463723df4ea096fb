"""The analysts' workbench: alerts become cases in a relational store, worked on a web page."""
