"""Feature definitions and the one fold they share online and offline: the card's built-in
features, declared attributes and entities, and the offline path."""
