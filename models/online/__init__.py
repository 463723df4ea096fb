"""The online feature store: card and entity state in Redis, its key layout, the batched Lua
operations and the layout's migrations."""
