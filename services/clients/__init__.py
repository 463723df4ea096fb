"""Producer and reader clients: what transaction producers and analysts call (no servers)."""
