"""The Redis store: operations applied and read back, their keys and shards, listings, the
change streams' entries and cursors, the sweep, the Redis connection and every Lua script.
Each module is imported by its own name; this package re-exports nothing."""
