"""Tally of the corpus run, printed at the end of the session (see conftest.py) and quoted in RELIABILITY.md."""

import re
from collections import Counter

#: tried/clear: bad inputs run and those answered as specified; handled: unusual but valid inputs that succeeded;
#: tracebacks: runs whose stderr held a traceback or an internal error; partial: runs that left files behind.
STATS: Counter = Counter()
#: (case, group, argument the error must name, exit status, what stderr said) of each corpus run.
ROWS: list[tuple[str, str, str, int, str]] = []


def summary() -> str:
    s = STATS
    return (f"reliability corpus: {s['tried']} bad inputs tried, {s['clear']} clear errors, {s['tracebacks']} "
            f"tracebacks, {s['partial']} partial files; {s['handled']} of {s['valid']} unusual valid inputs "
            "handled")


def table() -> str:
    """The corpus as a Markdown table (written when EX4D_RELIABILITY_TABLE names a file)."""
    lines = ["| case | input | exit | names | stderr (paths shortened) |", "|---|---|---|---|---|"]
    for name, group, flag, code, said in sorted(ROWS, key=lambda r: (r[1], r[0])):
        said = re.sub(r"/\S*?/pytest-\d+/[^/\s]+", "<tmp>", said).replace("|", "\\|")
        lines.append(f"| {name} | {group} | {code} | {f'`{flag}`' if flag else '—'} | {said} |")
    return "\n".join(lines) + "\n"
