"""The champion history of a model, read from its ml.model_events rows, and the rollback
rule over it: one pure rule, used by the DuckDB registry (pyml.store.lifecycle) and the
Spark one (pyml.store.spark_registry), which differ only in how they read the rows.

The history is a stack. Every event that crowns a version (to_status champion: promoted at
train time or by hand, migrated) pushes it; a rollback retires the top (its `rolled_back`
event pops it) and brings back the one under it (its `restored` event). So rolling back
twice after two promotions returns to the champion before both, and promoting again after a
rollback starts a new branch from there, as an editor's undo does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pyml.errors import LifecycleError

__all__ = ["crowned", "history", "rollback_target"]

# (version, event, to_status), in event_id order.
EventRow = tuple[int, str, str | None]


def history(rows: Iterable[EventRow]) -> list[int]:
    """The stack of champions that rollbacks walk back through, oldest first; its last item
    is the current champion."""
    stack: list[int] = []
    for version, event, to_status in rows:
        v = int(version)
        if event == "rolled_back":
            if stack and stack[-1] == v:
                stack.pop()
            elif v in stack:  # never happens with pyml's writes; keep the rest consistent
                del stack[len(stack) - 1 - stack[::-1].index(v)]
                stack[:] = [x for i, x in enumerate(stack) if i == 0 or stack[i - 1] != x]
        elif to_status == "champion" and (not stack or stack[-1] != v):
            # `restored` normally finds its version on top already (the rollback popped the
            # one above it); pushed otherwise so the top is always the champion.
            stack.append(v)
    return stack


def crowned(rows: Iterable[EventRow]) -> list[int]:
    """Every version that has been champion, in the order first crowned."""
    return list(dict.fromkeys(int(v) for v, _, to_status in rows if to_status == "champion"))


def rollback_target(name: str, current: int | None, stack: Sequence[int],
                    ever: Sequence[int] = ()) -> int:
    """The version a rollback of `name` brings back: the champion under the current one.

    `ever` lists every version that has been champion (for the message only). Raises
    LifecycleError, naming the situation and the fix, where there is none.
    """
    if current is None:
        raise LifecycleError(f"model '{name}' has no champion to roll back; "
                             f"`pyml promote {name} --version N` picks one by hand")
    # A champion the events do not show on top (a registry edited by hand) is taken as the
    # truth: the history is cut at its last crowning, or it is pushed where it has none.
    chain = [*stack]
    if current in chain:
        del chain[len(chain) - chain[::-1].index(current):]
    else:
        chain.append(current)
    below = [v for v in chain[:-1] if v != current]
    if below:
        return below[-1]
    others = sorted({int(v) for v in ever} - {current})
    if others:
        listed = ", ".join(f"v{v}" for v in others)
        why = (f"v{current} was its first champion; {listed} "
               f"{'was' if len(others) == 1 else 'were'} champion after it and "
               f"{'has' if len(others) == 1 else 'have'} been rolled back")
    else:
        why = f"v{current} is the only champion it has had"
    raise LifecycleError(f"model '{name}' has no earlier champion to roll back to ({why}); "
                         f"`pyml promote {name} --version N` picks a version by hand")
