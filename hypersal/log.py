"""One way to tell the user something: a line on stderr, prefixed, flushed at once. In a run
over several processes, every rank's lines say which rank speaks."""
import sys

_prefix = "hypersal"


def set_rank(rank: int, world_size: int) -> None:
    global _prefix
    _prefix = f"hypersal[{rank}/{world_size}]" if world_size > 1 else "hypersal"


def say(message: str) -> None:
    print(f"{_prefix}: {message}", file=sys.stderr, flush=True)


_warned: set[str] = set()


def warn(message: str) -> None:
    """say('warning: ...'), once per process: a damaged file read by several parts of one
    command is reported once."""
    if message not in _warned:
        _warned.add(message)
        say(f"warning: {message}")


def forget_warnings() -> None:
    """A new command in the same process (tests) warns afresh."""
    _warned.clear()
