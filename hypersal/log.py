"""One way to tell the user something: a line on stderr, prefixed, flushed at once. In a run
over several processes, every rank's lines say which rank speaks."""
import sys

_prefix = "hypersal"


def set_rank(rank: int, world_size: int) -> None:
    global _prefix
    _prefix = f"hypersal[{rank}/{world_size}]" if world_size > 1 else "hypersal"


def say(message: str) -> None:
    print(f"{_prefix}: {message}", file=sys.stderr, flush=True)
