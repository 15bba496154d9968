"""One way to tell the user something: a line on stderr, prefixed, flushed at once."""
import sys


def say(message: str) -> None:
    print(f"hypersal: {message}", file=sys.stderr, flush=True)
