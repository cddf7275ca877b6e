"""Helpers every package may import, and that import nothing else of ours: atomic writes
(`atomic`), data-file lookup (`paths`), user-facing errors (`errors`), progress bars
(`progress`), JSONL documents (`jsonl`), stable hashes (`hashing`)."""
